"""``medcf explain`` and ``medcf evaluate``: thin wrappers over ``medcf.explain_runner``.

Method settings come from the explainer's config dataclass (``MethodSpec.config_class``
in ``medcf.counterfactual.registry``): ``--set FIELD=VALUE`` (repeatable) sets any
field, typed and checked against the dataclass; ``--list-options`` prints them for
``--method``. The popular settings also have their own flags (``--take-at``,
``--compose``, ``--iterative``, ...). Errors about a setting name the flag that gave it.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Optional

import typer

from medcf.errors import MedcfError

# Options of both commands (typer reads these OptionInfo objects; sharing them keeps one text).
SHARED = {
    "classifier": typer.Option(..., "--classifier", help="Classifier run or model directory."),
    "generator": typer.Option(..., "--generator", help="Generator run of the method's backbone "
                              "(see --list-options): ae/vae for latent-shift, stylegan2-generator for "
                              "latent-probe."),
    "out": typer.Option(..., "--out", help="Output folder (must be empty unless --overwrite)."),
    "batch_size": typer.Option(16, "--batch-size", help="Images per explainer call."),
    "iterative": typer.Option(None, "--iterative/--single-gradient",
                              help="latent-shift: re-take the gradient at every step (method default "
                              "unless given)."),
    "step_size": typer.Option(None, "--step-size", help="Shift per frame (method default)."),
    "max_steps": typer.Option(None, "--max-steps", help="Frames searched per image."),
    "take_at": typer.Option(None, "--take-at", help="Take the counterfactual once p(target) reaches "
                            "this (e.g. 0.9999); validity is judged at the threshold (0.5)."),
    "compose": typer.Option(None, "--compose", help="Frames: generated (the generator's images) or "
                            "residual (input + the generator's change)."),
    "max_change": typer.Option(None, "--max-change", help="Pixel budget: mean |frame - reconstruction| "
                               "/ range; 'none' for no budget."),
    "encoder": typer.Option(None, "--encoder", help="latent-probe: a trained StyleGAN2 encoder run."),
    "probe_dir": typer.Option(None, "--probe-dir", help="latent-probe: load the fitted probe from here, "
                              "or fit it and save it here."),
    "fit_samples": typer.Option(None, "--fit-samples", help="latent-probe: generated samples to fit on."),
    "project_steps": typer.Option(None, "--project-steps", help="latent-probe: projector refinement "
                                  "steps after the encoder (default 0; 300 without --encoder)."),
    "set": typer.Option(None, "--set", metavar="FIELD=VALUE",
                        help="Any setting of the method's config (repeatable; typed and checked). "
                        "--list-options shows them."),
    "overwrite": typer.Option(False, "--overwrite", help="Write into a non-empty --out."),
    "progress": typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
}

# flags of the options that have their own (the library names the keyword; the CLI names the flag)
FLAGS = {"images": "--images", "convert_channels": "--convert-channels", "target": "--target",
         "direction": "--away-from", "method": "--method", "iterative": "--iterative",
         "step_size": "--step-size", "max_steps": "--max-steps", "take_at": "--take-at",
         "compose": "--compose", "max_change": "--max-change", "encoder": "--encoder",
         "probe_dir": "--probe-dir", "fit_samples": "--fit-samples", "project_steps": "--project-steps",
         "set": "--set"}


# ----------------------------------------------------------------------------- --list-options


def method_options_text(method: str) -> str:
    """What ``--list-options`` prints for ``method``: its backbone, config settings and extras."""
    from medcf.counterfactual.options import describe_settings
    from medcf.counterfactual.registry import METHODS

    if method not in METHODS:
        raise MedcfError(f"--method: unknown method {method!r}; choose one of {sorted(METHODS)}")
    spec = METHODS[method]
    lines = [f"{method}: --generator {spec.backbone}"]
    if spec.config_class is not None:
        lines.append(f"settings (--set FIELD=VALUE; {spec.config_class.__name__}):")
        lines += [f"  {row}" for row in describe_settings(spec.config_class)]
    extras = [o for o in spec.options if o not in _config_fields(spec)]
    if extras:
        lines.append("extras (their own flags, or --set NAME=VALUE): " + ", ".join(extras))
    return "\n".join(lines)


def _config_fields(spec) -> set[str]:
    import dataclasses

    return {f.name for f in dataclasses.fields(spec.config_class)} if spec.config_class else set()


def _list_callback(ctx: typer.Context, param, value):
    """--method and --list-options are eager: whichever is processed second prints and exits."""
    if ctx.resilient_parsing:
        return value
    ctx.meta[f"medcf_{param.name}"] = value
    if ctx.meta.get("medcf_list_options") and "medcf_method" in ctx.meta:
        typer.echo(method_options_text(ctx.meta["medcf_method"]))
        raise typer.Exit(0)
    return value


METHOD = typer.Option("latent-shift", "--method", is_eager=True, callback=_list_callback,
                      help="Explainer (medcf.counterfactual.registry): latent-shift, latent-probe, ...")
LIST_OPTIONS = typer.Option(False, "--list-options", is_eager=True, callback=_list_callback,
                            help="Print the settings of --method (for --set) and exit.")


# ----------------------------------------------------------------------------- options -> explainer


def _literal(text: str):
    """A --set value for a method without a config class: none/bool/int/float, else the text."""
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(low)
        except ValueError:
            pass
    return text


def method_options(method: str, flags: dict, sets: list[str] | None) -> tuple[dict, dict]:
    """(keyword options for ``build_explainer``, option -> flag that gave it) from the dedicated
    flags (None: not given) and the ``--set FIELD=VALUE`` texts, typed by the method's config."""
    from medcf.counterfactual.checkpoints import NONE, setting_error
    from medcf.counterfactual.options import parse_setting
    from medcf.counterfactual.registry import METHODS

    if method not in METHODS:
        raise MedcfError(f"--method: unknown method {method!r}; choose one of {sorted(METHODS)}")
    spec = METHODS[method]
    opts = {k: v for k, v in flags.items() if v is not None}
    named = {k: FLAGS.get(k, f"--{k.replace('_', '-')}") for k in opts}
    for text in sets or []:
        try:
            if spec.config_class is not None and text.partition("=")[0].strip() not in spec.options:
                key, value = parse_setting(spec.config_class, text)
            else:
                key, _, raw = text.partition("=")
                key = key.strip().replace("-", "_")
                if key not in spec.accepts():
                    raise setting_error("set", f"{key!r} is not an option of {method}; known: "
                                        f"{', '.join(spec.accepts())}")
                value = _literal(raw)
        except MedcfError as e:
            raise _flagged(e, {"set": "--set"}) from None
        if key in opts and named.get(key) != "--set":
            raise MedcfError(f"--set {key}: also given by {named[key]}; give it once")
        opts[key], named[key] = NONE if value is None else value, f"--set {key}"
    return opts, named


def _flagged(e: MedcfError, named: dict) -> MedcfError:
    """The same error with its setting's keyword replaced by the CLI flag that gave it."""
    param = getattr(e, "param", None)
    text = str(e)
    if param in named and text.startswith(f"{param}:"):
        new = type(e)(named[param] + text[len(param):])
        new.param = param
        return new
    return e


@contextlib.contextmanager
def naming_flags(named: dict):
    """Re-raise a library ``MedcfError`` about a setting with the flag's name instead."""
    try:
        yield
    except MedcfError as e:
        new = _flagged(e, {**FLAGS, **named})
        if new is e:
            raise
        raise new from None


def _target_and_direction(target: str | None, away_from: str | None) -> tuple[str, str | None]:
    if away_from is not None:
        if target not in (None, "opposite"):
            raise MedcfError("--target and --away-from: give one of them, not both")
        return away_from, "away"
    return target or "opposite", None


def _parse_max_change(value: str | None) -> float | None:
    if value is None:
        return None
    if value.lower() == "none":
        return float("inf")  # a budget never exceeded
    try:
        return float(value)
    except ValueError:
        raise MedcfError(f"--max-change: expected a number or 'none', got {value!r}") from None


def build_from_flags(method, classifier, generator, flags: dict, sets, *, progress: bool = True):
    """(explainer, option -> flag) for a command: typed options, one-line errors naming flags."""
    from medcf.explain_runner import build_explainer

    opts, named = method_options(method, flags, sets)
    with naming_flags(named):
        return build_explainer(method, classifier, generator, progress=progress, **opts), named


# ----------------------------------------------------------------------------- commands


def register(app: typer.Typer) -> None:
    """``medcf explain``, ``medcf evaluate`` and ``medcf demo`` (which runs both)."""
    from medcf.cli import demo

    demo.register(app)

    @app.command("explain")
    def explain_command(
        classifier: Path = SHARED["classifier"],
        generator: Path = SHARED["generator"],
        images: Path = typer.Option(..., "--images", help="An image file, a folder of images, or any "
                                    "dataset path medcf reads (resized to the generator's size)."),
        out: Path = SHARED["out"],
        method: str = METHOD,
        list_options: bool = LIST_OPTIONS,
        target: str = typer.Option(None, "--target", help="Class name or index to reach; default: "
                                   "'opposite' of the classifier's decision per image."),
        away_from: str = typer.Option(None, "--away-from", help="Class to move away from (binary)."),
        split: str = typer.Option(None, "--split", help="Split of a dataset path (train/val/test)."),
        limit: int = typer.Option(None, "--limit", help="Explain at most N images."),
        batch_size: int = SHARED["batch_size"],
        iterative: Optional[bool] = SHARED["iterative"],  # noqa: UP045 (typer reads the annotation)
        step_size: float = SHARED["step_size"],
        max_steps: int = SHARED["max_steps"],
        take_at: float = SHARED["take_at"],
        compose: str = SHARED["compose"],
        max_change: str = SHARED["max_change"],
        encoder: Path = SHARED["encoder"],
        probe_dir: Path = SHARED["probe_dir"],
        fit_samples: int = SHARED["fit_samples"],
        project_steps: int = SHARED["project_steps"],
        settings: Optional[list[str]] = SHARED["set"],  # noqa: UP045
        convert_channels: bool = typer.Option(False, "--convert-channels",
                                              help="Convert RGB<->grey to the generator's channels."),
        fps: float = typer.Option(8.0, "--fps", help="GIF frames per second."),
        overwrite: bool = SHARED["overwrite"],
        progress: bool = SHARED["progress"],
    ) -> None:
        """Explain images: per image a GIF, a PNG frame strip, a difference map and a JSON of scores.

        Example: medcf explain --classifier runs/demo/classifier --generator runs/demo/vae
        --images xray.png --out runs/explain --set take_at=0.9999

        Latent probe: medcf explain --method latent-probe --classifier runs/demo/classifier
        --generator runs/stylegan2 --encoder runs/encoder --probe-dir runs/probe --images xray.png
        --out runs/explain-probe

        Settings of a method: medcf explain --method latent-probe --list-options
        """
        want, direction = _target_and_direction(target, away_from)
        flags = {"take_at": take_at, "compose": compose, "iterative": iterative, "step_size": step_size,
                 "max_steps": max_steps, "max_change": _parse_max_change(max_change), "encoder": encoder,
                 "probe_dir": probe_dir, "fit_samples": fit_samples, "project_steps": project_steps,
                 "direction": direction}
        run_explain(method, classifier, generator, images, out, flags=flags, sets=settings, target=want,
                    split=split, limit=limit, batch_size=batch_size, convert_channels=convert_channels,
                    fps=fps, overwrite=overwrite, progress=progress)

    @app.command("evaluate")
    def evaluate_command(
        classifier: Path = SHARED["classifier"],
        generator: Path = SHARED["generator"],
        data: Path = typer.Option(..., "--data", help="Labelled dataset (a medcf synthetic folder gives "
                                  "FOP, CTR and localization ground truth)."),
        out: Path = SHARED["out"],
        method: str = METHOD,
        list_options: bool = LIST_OPTIONS,
        split: str = typer.Option("test", "--split", help="Split of --data to explain."),
        oracle: Path = typer.Option(None, "--oracle", help="Oracle run (independent judge; FID features)."),
        fo_detector: Path = typer.Option(None, "--fo-detector", help="Foreign-object detector run (FOP)."),
        ctr_regressor: Path = typer.Option(None, "--ctr-regressor", help="CTR regressor run (clinical metric)."),
        cpr_scorer: Path = typer.Option(None, "--cpr-scorer", help="Costophrenic-recess scorer run "
                                        "(effusion clinical metric: cpr_change)."),
        target: str = typer.Option("opposite", "--target", help="Class name/index, or 'opposite' of "
                                   "the classifier's decision per query."),
        limit: int = typer.Option(None, "--limit", help="Evaluate the first N images of the split."),
        batch_size: int = SHARED["batch_size"],
        iterative: Optional[bool] = SHARED["iterative"],  # noqa: UP045
        step_size: float = SHARED["step_size"],
        max_steps: int = SHARED["max_steps"],
        take_at: float = SHARED["take_at"],
        compose: str = SHARED["compose"],
        max_change: str = SHARED["max_change"],
        encoder: Path = SHARED["encoder"],
        probe_dir: Path = SHARED["probe_dir"],
        fit_samples: int = SHARED["fit_samples"],
        project_steps: int = SHARED["project_steps"],
        settings: Optional[list[str]] = SHARED["set"],  # noqa: UP045
        fid: str = typer.Option("domain", "--fid", help="FID features: domain (the oracle's), "
                                "inception (needs local weights) or none."),
        inception_weights: Path = typer.Option(None, "--inception-weights", help="pytorch-fid weights file."),
        lpips: bool = typer.Option(True, "--lpips/--no-lpips", help="LPIPS when its weights are cached."),
        examples: int = typer.Option(8, "--examples", help="Queries shown in examples.png."),
        overwrite: bool = SHARED["overwrite"],
        progress: bool = SHARED["progress"],
    ) -> None:
        """Explain a labelled split and score the counterfactuals: metrics.json, queries.csv, report.md.

        Example: medcf evaluate --classifier runs/demo/classifier --generator runs/demo/vae
        --data runs/demo/data --oracle runs/demo/oracle --fo-detector runs/demo/fo-detector
        --ctr-regressor runs/demo/ctr-regressor --limit 200 --out runs/eval

        Effusion data: add --cpr-scorer runs/cpr-scorer (medcf train cpr-scorer) for cpr_change.

        Latent probe: add --method latent-probe --generator runs/stylegan2 --encoder runs/encoder
        --probe-dir runs/probe
        """
        if fid not in ("domain", "inception", "none"):
            raise MedcfError(f"--fid: expected domain, inception or none, got {fid!r}")
        flags = {"take_at": take_at, "compose": compose, "iterative": iterative, "step_size": step_size,
                 "max_steps": max_steps, "max_change": _parse_max_change(max_change), "encoder": encoder,
                 "probe_dir": probe_dir, "fit_samples": fit_samples, "project_steps": project_steps}
        run_evaluation(method, classifier, generator, data, out, flags=flags, sets=settings, split=split,
                       oracle=oracle, fo_detector=fo_detector, ctr_regressor=ctr_regressor,
                       cpr_scorer=cpr_scorer, target=target,
                       limit=limit, batch_size=batch_size, fid=fid, inception_weights=inception_weights,
                       lpips=lpips, examples=examples, overwrite=overwrite, progress=progress)


def run_explain(method: str, classifier, generator, images, out, *, flags: dict | None = None,
                sets: list[str] | None = None, target: str = "opposite", split: str | None = None,
                limit: int | None = None, batch_size: int = 16, convert_channels: bool = False,
                fps: float = 8.0, overwrite: bool = False, progress: bool = True, echo=typer.echo,
                ) -> list[dict]:
    """What ``medcf explain`` does (also ``medcf demo``'s GIF stage): build, explain ``images``,
    write a GIF, strip, map and JSON per image into ``out``; returns the per-image records."""
    from medcf.explain_runner import (
        check_out_dir,
        explain_dataset,
        image_name,
        open_images,
        resolve_cli_target,
        write_explanation,
    )
    from medcf.io import staged_output_dir

    check_out_dir(out, overwrite)
    explainer, named = build_from_flags(method, classifier, generator, flags or {}, sets, progress=progress)
    with naming_flags(named):
        ds = open_images(images, explainer, split=split, convert_channels=convert_channels)
        tgt = resolve_cli_target(target, getattr(explainer.classifier, "class_names", None))
    t0 = time.perf_counter()
    records, notes, k = [], [], 0
    # files go to a hidden staging folder that replaces `out` whole at the end (medcf.io.outputs)
    with naming_flags(named), staged_output_dir(out, overwrite=overwrite) as stage:
        for cf, batch in explain_dataset(explainer, ds, tgt, batch_size, limit=limit, progress=progress):
            one_way = cf.info.get("target_is_map_target")  # VA-GAN: its map knows one direction only
            for i in range(len(cf)):
                notes.append(f"; the map only goes to {cf.info.get('map_target')!r}"
                             if one_way is not None and one_way[i] is False else "")
                idx = int(batch["index"][i]) if "index" in batch else k
                name = image_name(ds, k)
                files = getattr(ds, "files", None)
                source = str(files[k]) if files is not None and k < len(files) else f"{images}[{idx}]"
                records.append(write_explanation(cf, i, stage, name, source=source, fps=fps))
                k += 1
    flipped = sum(r["flipped"] for r in records)
    echo(f"explained {len(records)} image(s) in {time.perf_counter() - t0:.1f} s; "
         f"{flipped}/{len(records)} counterfactuals reach the target; files in {out}")
    for r, note in list(zip(records, notes, strict=True))[:20]:
        echo(f"  {r['name']}: p({r['target_name'] or r['target']}) "
             f"{r['prob_original']:.3f} -> {r['prob_counterfactual']:.3f}"
             f"{'' if r['flipped'] else f'  (not reached{note})'}")
    return records


def run_evaluation(method: str, classifier, generator, data, out, *, flags: dict | None = None,
                   sets: list[str] | None = None, split: str = "test", oracle=None, fo_detector=None,
                   ctr_regressor=None, cpr_scorer=None, target: str = "opposite", limit: int | None = None,
                   batch_size: int = 16, fid: str = "domain", inception_weights=None, lpips: bool = True,
                   examples: int = 8, overwrite: bool = False, progress: bool = True, extra_settings=None,
                   echo=typer.echo) -> dict:
    """What ``medcf evaluate`` does (also ``medcf demo``'s last stage): build, explain, score,
    write metrics.json, queries.csv and report.md into ``out``; returns the summary."""
    from medcf.classifiers import load_classifier
    from medcf.data import open_dataset
    from medcf.eval.report_md import write_evaluation
    from medcf.explain_runner import (
        check_out_dir,
        evaluate_explainer,
        explainer_input_shape,
        resolve_cli_target,
    )
    from medcf.io import staged_output_dir

    check_out_dir(out, overwrite)
    explainer, named = build_from_flags(method, classifier, generator, flags or {}, sets, progress=progress)
    models = {name: load_classifier(path, kind=kind) if path is not None else None
              for name, path, kind in (("oracle", oracle, "oracle"),
                                       ("fo_detector", fo_detector, "fo-detector"),
                                       ("ctr_regressor", ctr_regressor, "ctr-regressor"),
                                       ("cpr_scorer", cpr_scorer, "cpr-scorer"))}
    channels, resolution = explainer_input_shape(explainer)
    ds = open_dataset(data, split=split, resolution=resolution, channels=channels)
    with naming_flags(named):
        tgt = resolve_cli_target(target, getattr(explainer.classifier, "class_names", None))
    metric = None
    lpips_note = "off"
    if lpips:
        from medcf.errors import WeightsNotFoundError
        from medcf.eval import LPIPS

        try:
            metric, lpips_note = LPIPS("alex"), "alex"
        except WeightsNotFoundError:
            lpips_note = "skipped (no weights; see medcf weights import-lpips)"
    with naming_flags(named):
        summary, rows, shown = evaluate_explainer(
            explainer, ds, target=tgt, fid=None if fid == "none" else fid,
            inception_weights=inception_weights, lpips=metric, limit=limit, batch_size=batch_size,
            n_examples=examples, progress=progress, **models)
    flags = flags or {}
    settings = {
        "method": method, "classifier": str(classifier), "generator": str(generator),
        "data": str(data), "split": split, "target": target, "limit": limit,
        "batch_size": batch_size, "oracle": str(oracle) if oracle else None,
        "fo_detector": str(fo_detector) if fo_detector else None,
        "ctr_regressor": str(ctr_regressor) if ctr_regressor else None,
        "cpr_scorer": str(cpr_scorer) if cpr_scorer else None,
        "encoder": str(flags["encoder"]) if flags.get("encoder") else None,
        "probe_dir": str(flags["probe_dir"]) if flags.get("probe_dir") else None,
        "fit_samples": flags.get("fit_samples"), "project_steps": flags.get("project_steps"),
        "set": list(sets or []), "fid": fid,
        "inception_weights": str(inception_weights) if inception_weights else None,
        "lpips": lpips_note, "explainer_settings": _config_dict(explainer), **(extra_settings or {}),
    }
    with staged_output_dir(out, overwrite=overwrite) as stage:  # replaces `out` whole (medcf.io.outputs)
        paths = write_evaluation(stage, summary, rows, shown, settings)
    echo(json.dumps(_short_summary(summary), indent=2))
    echo(f"wrote {', '.join(p.name for p in paths.values())} to {out}")
    return summary


def _config_dict(explainer) -> dict | None:
    import dataclasses

    cfg = getattr(explainer, "config", None)
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else None


def _short_summary(summary: dict) -> dict:
    from medcf.eval.report_md import HEADLINE, lookup

    return {label: lookup(summary, key) for key, label, _ in HEADLINE if lookup(summary, key) is not None}
