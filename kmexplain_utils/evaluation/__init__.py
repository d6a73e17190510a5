"""The quantitative evaluation of the book (METHOD section 6): measures, baselines, the run and its CLI.

The evaluation *uses* the method and the book's trained networks; the method
never imports it.

================  ======================================================================
module            what
================  ======================================================================
``metrics.py``    concept maps vs parts (NMI, AMI, purity, mIoU), deletion / insertion,
                  pointing game, energy, contrastive maps vs the deciding part
``keypoints.py``  keypoint-based part measurements (CUB style) and EvalProtoPNet's part
                  consistency of prototypes
``sanity.py``     the model-randomisation sanity check (cascading re-initialisation,
                  Spearman correlation of maps)
``baselines.py``  Grad-CAM / LayerCAM at any block, occlusion
``run.py``        :func:`~kmexplain_utils.evaluation.run.run_evaluation`, the records, the
                  claims table and the command line
``readings.py``   chapter 5's generated sentences and build-time checks, as pure
                  functions of the records
================  ======================================================================

Command line::

    python -m kmexplain_utils.evaluation --profile quick --seeds 3 --out results.json
"""

__all__: list[str] = []  # a folder: its modules have the names
