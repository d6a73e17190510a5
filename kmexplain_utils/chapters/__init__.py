"""The book's machinery: profiles of a run are in :mod:`kmexplain_utils.config`; here the rest.

Nothing in the method imports this folder.

====================  =====================================================================
module                what
====================  =====================================================================
``models.py``         the classifiers the book trains: ``TinyResNet``, ResNet34 with a new head,
                      ``build_model(profile, n_classes)``
``pretrained.py``     the ONE loader of pretrained ImageNet weights (one cache, one
                      normalisation layer, one hash check): EfficientNet-Lite0, ResNet34
``training.py``       ``train_model``, ``get_trained_model(profile, seed)`` (checkpoint cache)
``checkpoints.py``    atomic ``save_checkpoint`` / validated ``load_checkpoint``
``notebook.py``       ``setup_notebook()`` at the top of every chapter; ``check`` (hidden claims)
``widgets.py``        ipywidgets explorers and their static fall-backs
``exercises.py``      ``check_<exercise>(student_function)``: the checkers of the coding exercises
``speed_report.py``   appendix A1's fit/explain table, read from the saved benchmark runs
``figure_log.py``     logs the width of every image panel of a displayed figure (the browser
                      test's "no panel under 160 px" rule reads the log)
====================  =====================================================================
"""

__all__: list[str] = []  # a folder: its modules have the names
