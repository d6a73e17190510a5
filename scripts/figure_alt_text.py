"""Alt text and captions of the book's figures, written into the chapters' cell metadata.

Every code cell that draws a figure carries, in its metadata, what a screen reader announces for
the figure (myst-nb's cell-level image options) and, where the figure carries a result that no
"**Figure:**" paragraph of the chapter already explains, a caption (myst-nb's figure options)::

    "mystnb": {"image": {"alt": "..."}, "figure": {"caption": "..."}}

The texts below are keyed by chapter and cell id. They say what the figure shows (its layout and
what to look for), never a number: the numbers are computed when the book is built and may move.
Run this script after a merge that rewrote a chapter's cells (only metadata is written; sources
and outputs are left as they are)::

    python scripts/figure_alt_text.py          # write the metadata
    python scripts/figure_alt_text.py --check  # exit 1 when a notebook differs from the texts here

``tests/test_figure_alt_text.py`` checks every chapter: a cell that draws a figure has alt text
that is not empty and not a file name.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]

#: chapter -> cell id -> {"alt": ..., "caption": ... (optional)}
FIGURES: dict[str, dict[str, dict[str, str]]] = {
    "00_data": {
        "ch00-005p": {"alt": "One row of eight colour swatches, named below: red, orange, yellow and brown (the warm "
                             "half) on the left, a white gap, then blue, cyan, violet and teal (the cool half)."},
        "ch00-007": {"alt": "Two rows of four generated creatures of the same class: each has a head in a warm colour "
                            "(which warm colour varies), a pointed tail and stripes, but a different body colour, pose, "
                            "number of legs, size, position and background."},
        "ch00-010": {"alt": "Gallery of the first test image of each class, one row per class, each image beside the "
                            "same image with its parts painted opaque: body, head, tail, legs and marking in one "
                            "colour each, named in a legend, the background left as it is."},
        "ch00-014": {"alt": "Four rows of class pairs from the training set, one pair per row, the deciding part "
                            "outlined in white: in the top two rows the two creatures differ in the class only by the "
                            "head's hue half (warm or cool), in the bottom two rows only by the tail (a warm spike or "
                            "a cool disc); pose, body, legs and background differ too, as in any two images."},
        "ch00-016": {"alt": "MNIST digits 0 to 3, one test image each in the top row, and below each digit its "
                            "stroke mask in black and white."},
        "ch00-016b": {"alt": "Gallery of the run's own data set when it is not the generated one (in the paper "
                             "profile, CUB-200-2011 birds): the first test image of up to eight classes, each beside "
                             "its part map."},
        "ch00-021": {"alt": "Training curves of the network: training loss per epoch falling, and train and test "
                            "accuracy per epoch rising towards their final values.",
                     "caption": "Training history of the chapter's network: loss (left) and accuracy on augmented "
                                "training batches and on the test set (right), per epoch."},
    },
    "01_cnn_is_sem": {
        "ch01-012": {"alt": "Grid of test images in grey, three per row, each titled with its true and predicted "
                            "class and the logit, and overlaid with the class activation map of the predicted class "
                            "drawn as one block per B4 position: red where a region raises the predicted class's "
                            "logit, blue where it lowers it, one colour scale centred at zero."},
        "ch01-020": {"alt": "Strip plot, one row per class: grey ticks for every training image of the class placed "
                            "by its embedding norm relative to the class's median, orange circles for the images the "
                            "linear head's row scores highest (to the right of the class, at its extremes) and blue "
                            "squares for the images nearest to the class mean (near the median)."},
    },
    "02_kmeans_classifier": {
        "ch02-011": {"alt": "One row per class showing the three training images nearest to the first k-means "
                            "prototype of that class; a red frame would mark an image of another class."},
        "ch02-015": {"alt": "Line plot of the k-means head's test accuracy against the number of prototypes per "
                            "class on a logarithmic axis, with the linear head's accuracy as a dashed horizontal "
                            "line; the vertical axis spans at least five points.",
                     "caption": "Test accuracy of the k-means classifier for each number of prototypes per class "
                                "K, against the network's own linear head (dashed line)."},
        "ch02-022f": {"alt": "Rows of training images, one row per prototype of one class, each row labelled with "
                            "the nuisance value (such as facing direction, size or position) that its members hold "
                            "most often and with its share."},
    },
    "03_explaining_b4": {
        "cell-008": {"alt": "One row per test image: the image, its ground-truth part map, and its B4 concept map, "
                            "a coarse grid in which each cell is coloured by its nearest concept in the concepts' own "
                            "colours; legends under the columns name the parts and each concept by its majority "
                            "part and share."},
        "cell-011": {"alt": "One row per B4 concept, labelled with its majority part and share, each showing three "
                            "training image patches nearest to the concept's centroid, with the grid cell of the "
                            "position outlined in the concept's colour."},
        "cell-014": {"alt": "Grid of test images overlaid with the attribution map of the winning prototype, "
                            "titled with the true class, the predicted class and the map's mean; red positions raise "
                            "the score, blue ones lower it, with one shared colour bar."},
        "cell-017": {"alt": "One row per test image with three maps over the image in grey: the winning prototype's map, the runner-up "
                            "prototype's map, and their difference, where red positions argue for the winning class "
                            "and blue ones for the runner-up."},
        "cell-020": {"alt": "For two test images: the concept map and a bar chart of each concept's contribution "
                            "to the score, bars coloured like the concepts and summing to the score; a legend names "
                            "each concept by its majority part."},
        "cell-022": {"alt": "One row per test image: its parts over the image in grey, the class activation map of the linear "
                            "head and the k-means attribution map on the same positions, with the correlation of the "
                            "two maps under the k-means map."},
        "7100db97a": {"alt": "A misclassified test image in its own colours, its parts over the image in "
                            "grey, the attribution map of the wrong winning class, and the contrastive map against the true class, red where the image looked more "
                            "like the wrong class."},
        "cell-027": {"alt": "Static version of the explorer: for each showcase image, its ground-truth parts over "
                            "the image in grey, its B4 concept map (concepts named by majority part in the legend) and the "
                            "attribution map of the winning prototype."},
        "cell-036": {"alt": "Bar chart of the concept contributions to one image's score with twice as many "
                            "concepts; the bars still sum to the same score."},
    },
    "04_multiblock": {
        "cell-004b": {"alt": "One image shown four times with the grids of blocks B1 to B4 drawn over it, from fine "
                             "to coarse; a plus sign marks one point and the cells holding it are nested."},
        "1f51f4eb": {"alt": "Four panels in a two-by-two grid, one per block B1 to B4, each showing the image "
                            "in grey with white dots at the registered position centres and red crosses at the grid-cell "
                            "centres."},
        "25bce981b": {"alt": "Bar chart of each block's share of the squared norms of the B1234 position vectors, "
                            "without scaling (grey) and after dividing each block by its scale (blue), with a "
                            "dashed line at an equal share.",
                     "caption": "Each block's share of the mean squared norm of the concatenated B1234 positions on "
                                "test images, before and after dividing each block by its scale; the dashed line is "
                                "an equal share."},
        "cell-011": {"alt": "One column per showcase image (three): the first row shows the ground-truth parts over "
                            "the image in grey, each further row one level's concept map from B4 to B1234 and the B4 "
                            "resolution control, drawn in the concept colours alone on the level's own grid, with a "
                            "legend per row naming that level's concepts by their majority part."},
        "cell-014": {"alt": "One row per B234 concept, labelled with its majority part, each showing three training "
                            "patches nearest to the concept's centroid, six grid cells wide, with the position's own "
                            "stride-wide cell outlined."},
        "346fc7b5": {"alt": "The Explainer's figure for one test image at level B234, four panels in a two-by-two "
                            "grid: the image, the attribution map of the predicted class, the contrastive map "
                            "against the runner-up, and the concept map, with a legend under the grid naming each "
                            "concept by its majority part."},
        "cell-020": {"alt": "Static version of the explorer at B234: for each showcase image, its ground-truth parts "
                            "over the image in grey, its concept map (concepts named in the legend) and the attribution map "
                            "of the winning prototype."},
    },
    "05_evaluation": {
        "c040": {"alt": "Three panels of the cascading randomisation: the median Spearman correlation of each "
                         "method's maps with the trained ones (mean and spread over seeds) after re-initialising "
                         "the head, then B4, then B3; the left panel shows the k-means B4 maps, the middle one "
                         "the k-means B234 maps (full map, contrastive map, class-specific part, shared part), "
                         "the right one CAM, Grad-CAM B3 and occlusion; a dashed line marks the pass threshold "
                         "and a grey band the step the rule reads."},
        "c032": {"alt": "Two scatter plots, one point per level with error bars over seeds: k-means test accuracy "
                        "against the object-pixel AMI of the concept maps (left) and against their mIoU with the "
                        "parts (right); hollow markers are the resolution controls, a grey band the linear head.",
                 "caption": "The trade-off per level: k-means accuracy against the semantic fidelity of the "
                            "concept maps (left: object-pixel AMI, right: mIoU), mean and standard deviation over "
                            "seeds."},
        "c036": {"alt": "Two line plots of the probability of the explained class against the percentage of "
                        "pixels removed (deletion, left) or inserted (insertion, right), one line per attribution "
                        "method; k-means maps solid, baselines dashed, the random map dotted.",
                 "caption": "Deletion (left) and insertion (right) curves of every attribution map, averaged over "
                            "images and seeds: a faithful map makes the deletion curve fall and the insertion curve "
                            "rise fast."},
        "ev-faithfulness": {"alt": "Dot plot, one row per attribution map (the k-means maps, CAM, Grad-CAM, "
                                   "occlusion and the random maps): a filled circle at its deletion AUC and a hollow "
                                   "square at its insertion AUC, each with a horizontal error bar of one standard "
                                   "deviation over seeds, on an axis from 0 to 1.",
                            "caption": "Faithfulness per map on the model it explains: deletion AUC (lower is "
                                       "better) and insertion AUC (higher is better), mean and standard deviation "
                                       "over seeds."},
        "c046": {"alt": "Tall grid with one column per showcase image (the first three) and one labelled row per "
                        "map: the image, its ground-truth parts, the concept map of every level with each concept "
                        "coloured like the part it was mapped to, then the k-means and the baseline attribution "
                        "maps of the predicted class."},
        # no caption: the cell also displays a table, which a caption would wrap in the same figure
        "c049": {"alt": "First figure: B234's test accuracy minus B4's against the number of prototypes per class, "
                        "one dot per seed with the mean and standard deviation, triangles at the chosen K. Second "
                        "figure: three line plots on the first seed, one line per level: k-means test accuracy against the "
                        "number of prototypes per class, and mIoU and object-pixel AMI against the number of "
                        "concepts."},
    },
    "06_real_network": {
        "92a85a8f": {"alt": "Line plot of the cascading randomisation on the held-out photos: for each map (the B234 "
                            "k-means map, its contrastive map, its class-specific part, its shared part, and CAM), "
                            "the median Spearman correlation with the trained maps after re-initialising the head, "
                            "then each block from B4 down; a dashed line marks the pass threshold and a grey band "
                            "the B4 step that the pass rule reads."},
        "a149e6ad": {"alt": "Two grids of the eight held-out photographs, three to a row (a cat, a cup of coffee, "
                            "an astronaut and others): first overlaid with the class activation map of the network's top ImageNet "
                            "class, then with the top class minus the runner-up per position, red for the top class "
                            "and blue against, each titled with the class names."},
        "5786160e": {"alt": "A grid of MNIST digits, four per row, each the real training digit nearest to one "
                            "k-means prototype, titled with the prototype's class."},
        "520c157d": {"alt": "Two figures, B4 then B234: the eight held-out photographs covered by their concept "
                            "maps, each titled with the network's ImageNet class, and a legend naming each concept "
                            "present by the mean colour and the texture of its pixels and its share of them (the "
                            "swatch is the colour the concept is drawn in, not its mean colour)."},
        "875c400c": {"alt": "One row per B234 concept of the real network, each showing six real photograph patches "
                            "nearest to the concept's centroid, one per image."},
        "e824a85a": {"alt": "One row per held-out photograph at B234, each map drawn over the photograph: the "
                            "attribution map of the k-means head's class (titled with the photo, the network's class "
                            "and the head's class), the contrastive map against the head's runner-up (red for, blue "
                            "against) and the concept map, with a legend naming the concepts by their pixels' mean colour."},
        "71c34612": {"alt": "A two-by-two grid, one panel per block of the real network, each showing a photograph with the registered position centres "
                            "as dots and the grid-cell centres as crosses."},
        "5588ff0e": {"alt": "Three maps of one photograph: the B4 attribution map drawn at the registered "
                            "centres, the same map naively upsampled, and their difference with a colour bar."},
        "76f09653": {"alt": "Line plot of the Spearman rank correlation between each method's map on the trained "
                            "network and on a network randomised stage by stage from the head down, one line per "
                            "method; a map that ignores the network stays near one.",
                     "caption": "Cascading randomisation: rank correlation of each method's maps with the trained "
                                "network's maps as the network is re-initialised from the head down; a map that "
                                "passes the sanity check falls."},
    },
    "07_interventions": {
        "iv-007": {"alt": "Panels in pairs, one above the other, three pairs to a row, for one test creature: the image above the same creature re-rendered without its head, then, for each explanation method, its map above the same map with the head's outline, titled with the share of its positive mass on the head."},
        "iv-009": {"alt": "Horizontal bar chart, one bar per explanation method, of the mean rank correlation between the map's mass per part and the drop of the explained score when the part is removed; a dashed line marks the random map's value."},
        "iv-014": {"alt": "Panels in pairs, one above the other, three pairs to a row, for chapter 5's first showcase creature: the image above the same scene without its background shapes, each titled with the predicted class and its probability, then each method's map above the map recomputed without the shapes."},
    },
    "A1_benchmarks": {
        "db7728c3b": {"alt": "Line plot of the share of points whose distances still had to be computed at each "
                            "iteration, for plain Lloyd (always all points) and for Hamerly's bounds (falling as "
                            "the clusters settle).",
                     "caption": "Share of the points that needed their distance products in each iteration: plain "
                                "Lloyd against Hamerly's bounds, fitted from the same start."},
        "e9fe4b36": {"alt": "Bar chart of the seconds per k-means iteration of each engine (this package with and "
                            "without Hamerly's bounds, scikit-learn and faiss), bars at the median with dots for the "
                            "single repeats.",
                     "caption": "Seconds per iteration of each k-means engine on the small problem: bars are "
                                "medians, dots single repeats."},
    },
}


def apply(root: Path = ROOT, check: bool = False) -> list[str]:
    """Write (or, with ``check``, compare) the metadata; return the differences found.

    Parameters
    ----------
    root : Path
        The repository root (``book/*.ipynb`` below it).
    check : bool
        Only compare: nothing is written.

    Returns
    -------
    list of str
        One line per cell whose metadata differed (and was written, unless ``check``), and one per
        cell id of :data:`FIGURES` that a chapter no longer has.
    """
    problems = []
    for chapter, cells in FIGURES.items():
        path = root / "book" / f"{chapter}.ipynb"
        nb = nbformat.read(path, as_version=4)
        by_id = {c.get("id"): c for c in nb.cells}
        changed = False
        for cell_id, texts in cells.items():
            cell = by_id.get(cell_id)
            if cell is None:
                problems.append(f"{path.name}: no cell {cell_id!r} (renamed or removed?)")
                continue
            want: dict = {"image": {"alt": texts["alt"]}}
            if texts.get("caption"):
                want["figure"] = {"caption": texts["caption"]}
            have = cell.metadata.get("mystnb", {})
            merged = {**{k: v for k, v in have.items() if k not in ("image", "figure")}, **want}
            if have != merged:
                problems.append(f"{path.name}: cell {cell_id} alt text/caption differs")
                cell.metadata["mystnb"] = merged
                changed = True
        if changed and not check:
            nbformat.write(nb, path)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the figures' alt text and captions into the chapters.")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    args = parser.parse_args(argv)
    problems = apply(check=args.check)
    for line in problems:
        print(line)
    missing = [p for p in problems if "no cell" in p]
    return 1 if (missing or (args.check and problems)) else 0


if __name__ == "__main__":
    sys.exit(main())
