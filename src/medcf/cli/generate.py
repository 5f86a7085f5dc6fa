"""``medcf generate`` (images from seeds) and ``medcf project`` (images -> StyleGAN2 latents)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from medcf.errors import DataError, MedcfError


def parse_seeds(text: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]; raises ``MedcfError`` naming --seeds on bad input."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                seeds.extend(range(a, b + 1))
            elif part:
                seeds.append(int(part))
    except ValueError:
        raise MedcfError(f"--seeds: expected a list like '0-15' or '1,5,9', got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise MedcfError(f"--seeds: expected non-negative seeds like '0-15', got {text!r}")
    return seeds


def _write_png(path: Path, image) -> None:  # image: [C, H, W] in [-1, 1]
    from PIL import Image

    from medcf.io import atomic_write
    from medcf.viz import to_uint8

    atomic_write(path, lambda p: Image.fromarray(to_uint8(image)).save(p, format="PNG"))


def _grid(images):  # [N, C, H, W] -> [C, rows*H, cols*W]
    import torch

    n, c, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = torch.full((c, rows * h, cols * w), -1.0)
    for i in range(n):
        r, q = divmod(i, cols)
        out[:, r * h:(r + 1) * h, q * w:(q + 1) * w] = images[i]
    return out


def _image_files(path: Path) -> list[Path]:
    from medcf.data.images import is_image_file

    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and is_image_file(p))
        if not files:  # a dataset folder (images/, masks/, class folders): name what it holds
            subs = [f"{d.name}/" for d in sorted(path.iterdir()) if d.is_dir()
                    and any(p.is_file() and is_image_file(p) for p in d.iterdir())]
            hint = f" (it holds image folders: {', '.join(subs[:4])}; pass one of them)" if subs else ""
            raise DataError(f"{path}: no image files in this folder{hint}")
        return files
    raise DataError(f"{path}: images not found")


def register(app: typer.Typer) -> None:
    @app.command("generate")
    def generate(
        generator: Path = typer.Option(..., "--generator", help="StyleGAN2 generator: model or run directory."),
        seeds: str = typer.Option("0-15", "--seeds", help="Seeds, e.g. '0-15' or '1,5,9'."),
        trunc: float = typer.Option(1.0, "--trunc", help="Truncation psi (1 = none, 0.7 = typical)."),
        out: Path = typer.Option(..., "--out", help="Output folder: seedNNNN.png per seed + grid.png."),
        class_index: int | None = typer.Option(None, "--class",
                                               help="Class index for a conditional generator (default: random)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out folder."),
    ) -> None:
        """Generate one image per seed (z ~ N(0, I) from torch.Generator().manual_seed(seed)) and a grid.

        Example:  medcf generate --generator runs/stylegan2 --seeds 0-15 --trunc 0.7 --out out/samples
        """
        import torch

        from medcf.generators.stylegan2.loading import load_stylegan2_generator, map_z
        from medcf.io import check_output, write_output_dir

        seed_list = parse_seeds(seeds)
        check_output(out, overwrite=overwrite)  # before any work; checked again when swapping in
        G = load_stylegan2_generator(generator)
        images = []
        with torch.no_grad():
            for s in seed_list:
                rng = torch.Generator().manual_seed(s)
                z = torch.randn(1, G.z_dim, generator=rng)
                ws = map_z(G, z, truncation_psi=trunc, c=class_index, rng=rng)
                images.append(G.synthesis(ws, noise_mode="const")[0].clamp(-1, 1))

        def fill(tmp: Path) -> None:
            for s, img in zip(seed_list, images, strict=True):
                _write_png(tmp / f"seed{s:04d}.png", img)
            _write_png(tmp / "grid.png", _grid(torch.stack(images)))

        write_output_dir(out, fill, overwrite=overwrite)
        typer.echo(f"generate: {len(seed_list)} image(s) and grid.png in {out}")

    @app.command("project")
    def project(
        generator: Path = typer.Option(..., "--generator", help="StyleGAN2 generator: model or run directory."),
        images: Path = typer.Option(..., "--images", help="An image file or a folder of images (PNG/JPEG/DICOM...)."),
        out: Path = typer.Option(..., "--out", help="Output folder: <name>_proj.png, latents.safetensors, "
                                                    "projection.json."),
        space: str = typer.Option("w+", "--space", help="Latent space: 'w' or 'w+'."),
        steps: int = typer.Option(300, "--steps", help="Optimisation steps."),
        lr: float = typer.Option(0.1, "--lr", help="Peak learning rate."),
        lpips_weight: float = typer.Option(1.0, "--lpips-weight", help="LPIPS term weight (0 = off)."),
        l2_weight: float = typer.Option(1.0, "--l2-weight", help="Pixel MSE term weight."),
        encoder: Path | None = typer.Option(None, "--encoder", help="Start from a trained encoder's latents."),
        resume_from: Path | None = typer.Option(None, "--resume-from",
                                                help="Continue from a latents.safetensors of an earlier run."),
        batch_size: int = typer.Option(8, "--batch-size", help="Images optimised together."),
        seed: int = typer.Option(0, "--seed", help="Seed of the noise maps and w noise."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out folder."),
    ) -> None:
        """Project images into a StyleGAN2 latent space (W or W+) by optimisation; resumable.

        Example:  medcf project --generator runs/stylegan2 --images scans/ --out out/proj --space w+ --steps 300
        """
        import torch

        from medcf.data import load_image
        from medcf.encoders import (
            Projector,
            ProjectorConfig,
            SavedLatents,
            load_latents,
            save_latents,
        )
        from medcf.encoders.stylegan_encoder import load_stylegan_encoder
        from medcf.generators.fingerprint import generator_fingerprint
        from medcf.generators.stylegan2.loading import load_stylegan2_generator
        from medcf.io import check_output, unique_stems, write_output_dir

        if batch_size < 1:
            raise MedcfError(f"--batch-size: must be >= 1, got {batch_size}")
        if encoder is not None and resume_from is not None:
            raise MedcfError("--encoder and --resume-from: pass one starting point, not both")
        try:
            config = ProjectorConfig(space=space, steps=steps, lr=lr, lpips_weight=lpips_weight,
                                     l2_weight=l2_weight, progress=progress)
        except ValueError as e:
            raise MedcfError(f"medcf project: {e}") from None
        files = _image_files(images)
        check_output(out, overwrite=overwrite)  # before any work; checked again when swapping in
        names = unique_stems(files)
        G = load_stylegan2_generator(generator)
        enc = load_stylegan_encoder(encoder, generator=G) if encoder is not None else None
        saved = load_latents(resume_from) if resume_from is not None else None
        if saved is not None and saved.latents.shape[0] != len(files):
            raise MedcfError(f"--resume-from {resume_from}: holds {saved.latents.shape[0]} latent(s) "
                             f"but --images has {len(files)} image(s)")
        if saved is not None and saved.meta.get("files") not in (None, [p.name for p in files]):
            raise MedcfError(f"--resume-from {resume_from}: was made for other image files "
                             f"({saved.meta['files'][:3]}...)")
        proj = Projector(G, config=config)
        rng = torch.Generator().manual_seed(seed)
        lat, noise, finals, projected = [], {}, [], []
        for i in range(0, len(files), batch_size):
            chunk = files[i:i + batch_size]
            x = torch.stack([load_image(p, resolution=G.img_resolution, channels=G.img_channels) for p in chunk])
            init = None
            if enc is not None:
                with torch.no_grad():
                    init = enc(x)
            elif saved is not None:
                init = SavedLatents(latents=saved.latents[i:i + len(chunk)],
                                    noise={k: v[i:i + len(chunk)] for k, v in saved.noise.items()}, meta={})
            res = proj.project(x, init=init, generator=rng)
            projected.extend(img.clamp(-1, 1) for img in res.images)
            lat.append(res.latents)
            for k, v in res.noise.items():
                noise.setdefault(k, []).append(v)
            finals.append(res.final)
        total_steps = steps + int(saved.meta.get("steps", 0)) if saved is not None else steps
        final = {k: torch.cat([f[k] for f in finals]).tolist() for k in finals[0]}
        meta = {"files": [p.name for p in files], "space": space, "steps": total_steps,
                "generator": str(generator), "generator_fingerprint": generator_fingerprint(G),
                "start": "encoder" if enc is not None else ("resume" if saved is not None else "w_avg")}
        meta["outputs"] = [f"{n}_proj.png" for n in names]

        def fill(tmp: Path) -> None:
            for name, img in zip(names, projected, strict=True):
                _write_png(tmp / f"{name}_proj.png", img)
            save_latents(tmp / "latents.safetensors", torch.cat(lat),
                         noise={k: torch.cat(v) for k, v in noise.items()}, meta={**meta, "final": final})
            (tmp / "projection.json").write_text(json.dumps(
                {**meta, "final": final, "settings": proj.settings()}, indent=2) + "\n")

        write_output_dir(out, fill, overwrite=overwrite)
        def mean(k: str) -> float:
            return sum(final[k]) / len(final[k])

        typer.echo(f"project: {len(files)} image(s) into {space} ({total_steps} steps in all), "
                   f"mean LPIPS {mean('lpips'):.4g}, mean L2 {mean('l2'):.4g}; {out}/latents.safetensors")
