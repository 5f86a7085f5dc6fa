"""``medcf explain`` and ``medcf evaluate``: thin wrappers over ``medcf.explain_runner``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from medcf.errors import MedcfError

# Options of both commands (typer reads these OptionInfo objects; sharing them keeps one text).
SHARED = {
    "classifier": typer.Option(..., "--classifier", help="Classifier run or model directory."),
    "generator": typer.Option(..., "--generator", help="Generator run: ae/vae (latent-shift) or "
                              "stylegan2-generator (latent-probe)."),
    "out": typer.Option(..., "--out", help="Output folder (must be empty unless --overwrite)."),
    "method": typer.Option("latent-shift", "--method", help="Explainer: latent-shift | latent-probe."),
    "batch_size": typer.Option(16, "--batch-size", help="Images per explainer call."),
    "iterative": typer.Option(False, "--iterative/--single-gradient",
                              help="Re-take the gradient at every step (latent-shift)."),
    "step_size": typer.Option(None, "--step-size", help="Shift per frame (method default)."),
    "max_steps": typer.Option(None, "--max-steps", help="Frames searched per image."),
    "take_at": typer.Option(None, "--take-at", help="Take the counterfactual once p(target) reaches "
                            "this (e.g. 0.9999); validity is judged at 0.5."),
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
    "overwrite": typer.Option(False, "--overwrite", help="Write into a non-empty --out."),
    "progress": typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
}


def _method_opts(iterative: bool, step_size: float | None, max_steps: int | None,
                 max_change: float | None, direction: str | None, encoder=None, probe_dir=None,
                 fit_samples: int | None = None, progress: bool = True,
                 project_steps: int | None = None, take_at: float | None = None,
                 compose: str | None = None) -> dict:
    opts = {"take_at": take_at, "compose": compose, "iterative": iterative, "step_size": step_size,
            "max_steps": max_steps, "max_change": max_change, "encoder": encoder, "probe_dir": probe_dir,
            "fit_samples": fit_samples, "progress": progress, "project_steps": project_steps}
    if direction is not None:
        opts["direction"] = direction
    return opts


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


def _build(method, classifier, generator, opts):
    from medcf.explain_runner import build_explainer

    return build_explainer(method, classifier, generator, **opts)


def register(app: typer.Typer) -> None:
    @app.command("explain")
    def explain_command(
        classifier: Path = SHARED["classifier"],
        generator: Path = SHARED["generator"],
        images: Path = typer.Option(..., "--images", help="An image file, a folder of images, or any "
                                    "dataset path medcf reads (resized to the generator's size)."),
        out: Path = SHARED["out"],
        method: str = SHARED["method"],
        target: str = typer.Option(None, "--target", help="Class name or index to reach; default: "
                                   "'opposite' of the classifier's decision per image."),
        away_from: str = typer.Option(None, "--away-from", help="Class to move away from (binary)."),
        split: str = typer.Option(None, "--split", help="Split of a dataset path (train/val/test)."),
        limit: int = typer.Option(None, "--limit", help="Explain at most N images."),
        batch_size: int = SHARED["batch_size"],
        iterative: bool = SHARED["iterative"],
        step_size: float = SHARED["step_size"],
        max_steps: int = SHARED["max_steps"],
        take_at: float = SHARED["take_at"],
        compose: str = SHARED["compose"],
        max_change: str = SHARED["max_change"],
        encoder: Path = SHARED["encoder"],
        probe_dir: Path = SHARED["probe_dir"],
        fit_samples: int = SHARED["fit_samples"],
        project_steps: int = SHARED["project_steps"],
        convert_channels: bool = typer.Option(False, "--convert-channels",
                                              help="Convert RGB<->grey to the generator's channels."),
        fps: float = typer.Option(8.0, "--fps", help="GIF frames per second."),
        overwrite: bool = SHARED["overwrite"],
        progress: bool = SHARED["progress"],
    ) -> None:
        """Explain images: per image a GIF, a PNG frame strip, a difference map and a JSON of scores.

        Example: medcf explain --classifier runs/demo/classifier --generator runs/demo/vae
        --images xray.png --out runs/explain

        Latent probe: medcf explain --method latent-probe --classifier runs/demo/classifier
        --generator runs/stylegan2 --encoder runs/encoder --probe-dir runs/probe --images xray.png
        --out runs/explain-probe
        """
        from medcf.explain_runner import (
            check_out_dir,
            explain_dataset,
            image_name,
            open_images,
            resolve_cli_target,
            write_explanation,
        )

        want, direction = _target_and_direction(target, away_from)
        check_out_dir(out, overwrite)
        opts = _method_opts(iterative, step_size, max_steps, _parse_max_change(max_change), direction,
                            encoder, probe_dir, fit_samples, progress, project_steps, take_at,
                            compose)
        explainer = _build(method, classifier, generator, opts)
        ds = open_images(images, explainer, split=split, convert_channels=convert_channels)
        names = getattr(explainer.classifier, "class_names", None)
        tgt = resolve_cli_target(want, names)
        t0 = time.perf_counter()
        records, k = [], 0
        for cf, batch in explain_dataset(explainer, ds, tgt, batch_size, limit=limit, progress=progress):
            for i in range(len(cf)):
                idx = int(batch["index"][i]) if "index" in batch else k
                name = image_name(ds, k)
                files = getattr(ds, "files", None)
                source = str(files[k]) if files is not None and k < len(files) else f"{images}[{idx}]"
                records.append(write_explanation(cf, i, out, name, source=source, fps=fps))
                k += 1
        flipped = sum(r["flipped"] for r in records)
        typer.echo(f"explained {len(records)} image(s) in {time.perf_counter() - t0:.1f} s; "
                   f"{flipped}/{len(records)} counterfactuals reach the target; files in {out}")
        for r in records[:20]:
            typer.echo(f"  {r['name']}: p({r['target_name'] or r['target']}) "
                       f"{r['prob_original']:.3f} -> {r['prob_counterfactual']:.3f}"
                       f"{'' if r['flipped'] else '  (not reached)'}")

    @app.command("evaluate")
    def evaluate_command(
        classifier: Path = SHARED["classifier"],
        generator: Path = SHARED["generator"],
        data: Path = typer.Option(..., "--data", help="Labelled dataset (a medcf synthetic folder gives "
                                  "FOP, CTR and localization ground truth)."),
        out: Path = SHARED["out"],
        method: str = SHARED["method"],
        split: str = typer.Option("test", "--split", help="Split of --data to explain."),
        oracle: Path = typer.Option(None, "--oracle", help="Oracle run (independent judge; FID features)."),
        fo_detector: Path = typer.Option(None, "--fo-detector", help="Foreign-object detector run (FOP)."),
        ctr_regressor: Path = typer.Option(None, "--ctr-regressor", help="CTR regressor run (clinical metric)."),
        target: str = typer.Option("opposite", "--target", help="Class name/index, or 'opposite' of "
                                   "the classifier's decision per query."),
        limit: int = typer.Option(None, "--limit", help="Evaluate the first N images of the split."),
        batch_size: int = SHARED["batch_size"],
        iterative: bool = SHARED["iterative"],
        step_size: float = SHARED["step_size"],
        max_steps: int = SHARED["max_steps"],
        take_at: float = SHARED["take_at"],
        compose: str = SHARED["compose"],
        max_change: str = SHARED["max_change"],
        encoder: Path = SHARED["encoder"],
        probe_dir: Path = SHARED["probe_dir"],
        fit_samples: int = SHARED["fit_samples"],
        project_steps: int = SHARED["project_steps"],
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

        Latent probe: add --method latent-probe --generator runs/stylegan2 --encoder runs/encoder
        --probe-dir runs/probe
        """
        from medcf.classifiers import load_classifier
        from medcf.data import open_dataset
        from medcf.eval.report_md import write_evaluation
        from medcf.explain_runner import check_out_dir, evaluate_explainer, resolve_cli_target

        if fid not in ("domain", "inception", "none"):
            raise MedcfError(f"--fid: expected domain, inception or none, got {fid!r}")
        check_out_dir(out, overwrite)
        opts = _method_opts(iterative, step_size, max_steps, _parse_max_change(max_change), None,
                            encoder, probe_dir, fit_samples, progress, project_steps, take_at,
                            compose)
        explainer = _build(method, classifier, generator, opts)
        models = {name: load_classifier(path, kind=kind) if path is not None else None
                  for name, path, kind in (("oracle", oracle, "oracle"),
                                           ("fo_detector", fo_detector, "fo-detector"),
                                           ("ctr_regressor", ctr_regressor, "ctr-regressor"))}
        from medcf.explain_runner import explainer_input_shape

        channels, resolution = explainer_input_shape(explainer)
        ds = open_dataset(data, split=split, resolution=resolution, channels=channels)
        names = getattr(explainer.classifier, "class_names", None)
        tgt = resolve_cli_target(target, names)
        metric = None
        lpips_note = "off"
        if lpips:
            from medcf.errors import WeightsNotFoundError
            from medcf.eval import LPIPS

            try:
                metric, lpips_note = LPIPS("alex"), "alex"
            except WeightsNotFoundError:
                lpips_note = "skipped (no weights; see medcf weights import-lpips)"
        summary, rows, shown = evaluate_explainer(
            explainer, ds, target=tgt, fid=None if fid == "none" else fid,
            inception_weights=inception_weights, lpips=metric, limit=limit, batch_size=batch_size,
            n_examples=examples, progress=progress, **models)
        settings = {
            "method": method, "classifier": str(classifier), "generator": str(generator),
            "data": str(data), "split": split, "target": target, "limit": limit,
            "batch_size": batch_size, "oracle": str(oracle) if oracle else None,
            "fo_detector": str(fo_detector) if fo_detector else None,
            "ctr_regressor": str(ctr_regressor) if ctr_regressor else None,
            "encoder": str(encoder) if encoder else None, "probe_dir": str(probe_dir) if probe_dir else None,
            "fit_samples": fit_samples, "project_steps": project_steps, "fid": fid,
            "inception_weights": str(inception_weights) if inception_weights else None,
            "lpips": lpips_note, "explainer_settings": _config_dict(explainer),
        }
        paths = write_evaluation(out, summary, rows, shown, settings)
        typer.echo(json.dumps(_short_summary(summary), indent=2))
        typer.echo(f"wrote {', '.join(p.name for p in paths.values())} to {out}")


def _config_dict(explainer) -> dict | None:
    import dataclasses

    cfg = getattr(explainer, "config", None)
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else None


def _short_summary(summary: dict) -> dict:
    from medcf.eval.report_md import HEADLINE, lookup

    return {label: lookup(summary, key) for key, label, _ in HEADLINE if lookup(summary, key) is not None}
