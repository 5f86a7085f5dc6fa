"""The end-to-end explanation path: checkpoints -> explainer -> batches of counterfactuals -> files.

One job per module, every name re-exported here:

- ``builders``: ``build_explainer`` turns a method name (the table
  ``medcf.counterfactual.registry.METHODS``) and checkpoint paths into a ready explainer;
- ``inputs``: ``open_images`` (an image file, a folder of images or any dataset path
  ``medcf.data.open_dataset`` reads, sized for the generator) and ``explain_dataset``
  (batches with a ``tqdm.auto`` bar, yielding ``(Counterfactual, sample-dict batch)``);
- ``outputs``: ``write_explanation`` (one query's GIF, frame strip, difference map and
  JSON, atomic writes via ``medcf.viz``) and ``check_out_dir``;
- ``evaluation``: ``evaluate_explainer`` (explain a labelled split and score it).

Errors are one-line ``MedcfError``s; those about a setting carry ``err.param`` (the
keyword's name), which the CLI turns into its flag.

Example:
    >>> from medcf.explain_runner import build_explainer, open_images, explain_dataset
    >>> explainer = build_explainer("latent-shift", "runs/demo/classifier", "runs/demo/vae")  # doctest: +SKIP
    >>> ds = open_images("xrays/", explainer)                                        # doctest: +SKIP
    >>> for cf, batch in explain_dataset(explainer, ds, target="opposite"):          # doctest: +SKIP
    ...     print(cf.flipped.tolist())
"""

from medcf.counterfactual.checkpoints import (
    EXPLAINABLE_KINDS,
    check_pair,
    generator_shape,
    load_explained_classifier,
)
from medcf.explain_runner.builders import (
    build_explainer,
    build_latent_probe_method,
    build_latent_shift,
    explainer_input_shape,
)
from medcf.explain_runner.evaluation import dataset_task, evaluate_explainer
from medcf.explain_runner.inputs import (
    OPPOSITE,
    explain_dataset,
    image_name,
    open_images,
    opposite_targets,
    resolve_cli_target,
)
from medcf.explain_runner.outputs import check_out_dir, json_safe, query_record, write_explanation

# older private names some builders import
_check_pair, _generator_shape = check_pair, generator_shape

__all__ = [
    "EXPLAINABLE_KINDS",
    "OPPOSITE",
    "build_explainer",
    "build_latent_probe_method",
    "build_latent_shift",
    "check_out_dir",
    "check_pair",
    "dataset_task",
    "evaluate_explainer",
    "explain_dataset",
    "explainer_input_shape",
    "generator_shape",
    "image_name",
    "json_safe",
    "load_explained_classifier",
    "open_images",
    "opposite_targets",
    "query_record",
    "resolve_cli_target",
    "write_explanation",
]
