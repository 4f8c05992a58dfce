"""The comparison report of finished runs: `report.html` (one self-contained page) and `report.md`, with their figures.

What it holds, in order (`sections.SECTIONS`; a section with nothing to show is left out):

- a paragraph generated from the numbers that says which model won, by how much and whether that is beyond chance
  (runs of one setup, differing only in their seed, compared as setups);
- Results: each run's short name (what the headings, figures and later tables call it: "CNN", "VGG16") beside its
  full label, its test accuracy with its 95% Wilson interval, top-5 accuracy, loss, size, training time and time per
  epoch (each column in one unit), inference speed and the weights file it started from;
- Runs of one setup, grouped: the mean ± sd of each setup run with several seeds;
- Every pair of runs (more than two runs): McNemar's test of each pair, Holm-corrected;
- Robustness (runs scored with `evaluate --corruptions`): accuracy under the common corruptions, and which model held
  up best;
- the figures: learning curves (phase boundaries, the learning-rate schedule and the kept epoch marked), per-class
  accuracy, accuracy under the corruptions by severity, each run's confusion matrix; with the test images at hand,
  the images where the models disagree and each model's most confident mistakes;
- Per-class numbers: each run's precision, recall and F1 per class, its top confusions and its confusion matrix;
- Settings: every setting of every run (where they differ, highlighted), the data's source and hash, the cnnlab
  version, when each run finished and the command that trains it again;
- Environment: the hardware and libraries, and when and from which runs the report was written.

Where each job lives: `builder` loads and checks the runs and writes the report (`build_report`); `sections` lists
the sections and writes the prose around their tables and figures; `verdict` the generated paragraph; `tables` the
tables (and `reproduce_command`); `pictures` the figures; `blocks` the shapes of content (paragraph, table, picture,
list, folded details) that `render` draws through the Jinja2 templates in `templates/`, escaping every value.
"""
