"""Config -> objects: dataset, autoencoder, model, diffusion, optimizer.

The model is told what the data looks like (EDM's habit): its input side, channels and classes come
from the dataset and the autoencoder, and `learn_sigma` from the diffusion, each passed only if the
model's constructor takes that argument.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from torch import nn

from speed.adapters import adapter_of_checkpoint
from speed.config import instantiate
from speed.config_schema import NODES
from speed.control import ControlNet
from speed.data.degradation import Degradation
from speed.errors import ConfigError
from speed.generation import config_family
from speed.models import extract_state_dict, load_checkpoint, load_pretrained
from speed.run import TrainState, sampling_checkpoint

# Keys of the `data` node read by the runners, not passed to the dataset class.
DATA_LOADER_KEYS = tuple(NODES["data"])


def build_dataset(cfg: DictConfig, **kwargs):
    """The `data` node's dataset (its loader keys left out); kwargs override its arguments."""
    node = OmegaConf.masked_copy(cfg.data, [k for k in cfg.data if k not in DATA_LOADER_KEYS])
    return instantiate(OmegaConf.create({"data": node}).data, **kwargs)  # errors say "data"


def build_reference_dataset(cfg: DictConfig):
    """The `data` node's dataset without its random flips (where its class takes `random_flip`,
    stated in the config or not): fixed images, e.g. FID's reference images or the control
    images of a ControlNet's sampling."""
    params = inspect.signature(get_object(cfg.data._target_)).parameters
    return build_dataset(cfg, **({"random_flip": False} if "random_flip" in params else {}))


def dataset_class_names(cfg: DictConfig) -> list[str] | None:
    """The class names the `data` node's class declares as a class attribute (e.g. AnimalMNIST's),
    without building the dataset; None when it declares none or names no importable class."""
    target = OmegaConf.select(cfg, "data._target_", default=None, throw_on_missing=False)
    try:
        names = getattr(get_object(target), "class_names", None) if target else None
    except (ImportError, AttributeError, ValueError):
        return None
    return list(names) if isinstance(names, (list, tuple)) else None


def build_autoencoder(cfg: DictConfig) -> nn.Module:
    return instantiate(cfg.autoencoder)


@dataclass(frozen=True)
class DataSpec:
    """What the diffusion model sees: channels and side of its input (latents in latent space)."""

    channels: int
    side: int
    num_classes: int

    def to_dict(self) -> dict:
        return asdict(self)


def data_spec(cfg: DictConfig, dataset, autoencoder) -> DataSpec:
    """The model input implied by a dataset and autoencoder. Root `num_classes` and `image_size`,
    when set, must agree with the dataset (a mismatch is a ConfigError naming the key to set);
    `num_classes: 0` trains an unconditional model on any dataset."""
    if dataset.is_latent or autoencoder.latent_channels is None:
        channels, side = dataset.num_channels, dataset.resolution
    else:
        channels, side = autoencoder.latent_channels, dataset.resolution // autoencoder.downsample
    pixels = dataset.resolution * (autoencoder.downsample if dataset.is_latent else 1)
    if cfg.image_size and cfg.image_size != pixels:
        raise ConfigError(
            f"image_size={cfg.image_size} but the dataset's images are {pixels} px "
            f"(data.image_size); set image_size={pixels}, or image_size=0 to take the dataset's"
        )
    num_classes = dataset.num_classes if cfg.num_classes is None else cfg.num_classes
    if num_classes and num_classes != dataset.num_classes:
        has = f"{dataset.num_classes} classes" if dataset.num_classes else "no classes"
        raise ConfigError(
            f"num_classes={num_classes} but the dataset ({_data_source(cfg)}) has {has}; set "
            f"num_classes={dataset.num_classes or 0}, or num_classes=null to take the dataset's"
        )
    return DataSpec(channels=channels, side=side, num_classes=num_classes)


def _data_source(cfg: DictConfig) -> str:
    path = OmegaConf.select(cfg, "data.path", default=None, throw_on_missing=False)
    return f"data.path={path}" if path else str(cfg.data._target_)


def sampling_data_spec(cfg: DictConfig, autoencoder, ckpt: dict) -> DataSpec:
    """The spec for sampling: stored in our checkpoints; else from the config (image_size,
    num_classes, latent autoencoder), which is how official DiT weights are sampled; else from
    building the dataset."""
    stored = TrainState.stored_data_spec(ckpt)
    if stored is not None:
        return DataSpec(**stored)
    if cfg.image_size and cfg.num_classes is not None and autoencoder.latent_channels:
        side = cfg.image_size // autoencoder.downsample
        return DataSpec(autoencoder.latent_channels, side, cfg.num_classes)
    return data_spec(cfg, build_dataset(cfg), autoencoder)


def objective_learns_sigma(cfg: DictConfig) -> bool:
    """`diffusion.learn_sigma`, else its `_target_`'s default for it; False when the objective
    takes no such argument (an interpolant has no variance to learn)."""
    if "learn_sigma" in cfg.diffusion:
        return bool(cfg.diffusion.learn_sigma)
    param = inspect.signature(get_object(cfg.diffusion._target_)).parameters.get("learn_sigma")
    return bool(param.default) if param is not None else False


def build_text_encoder(cfg: DictConfig) -> nn.Module:
    """The `text_encoder` node's conditioning (`speed.text`; `Labels` when the model reads no
    text)."""
    return instantiate(cfg.text_encoder)


def check_captions(text_encoder: nn.Module, dataset) -> None:
    """A text encoder needs a captioned dataset, and a captioned dataset a text encoder."""
    captioned = bool(getattr(dataset, "has_captions", False))
    if text_encoder.reads_text and not captioned:
        raise ConfigError(
            f"text_encoder is {text_encoder.name}, but the dataset ({type(dataset).__name__}) has "
            "no captions; use a captioned dataset (speed.data.CaptionedImageFolder)"
        )
    if captioned and not text_encoder.reads_text:
        raise ConfigError(
            f"the dataset ({type(dataset).__name__}) is captioned but no text encoder is set; set "
            "text_encoder._target_ (speed.text.T5TextEncoder, CLIPTextEncoder or ByteTokens)"
        )


def build_model(cfg: DictConfig, spec: DataSpec, text_encoder: nn.Module | None = None):
    """The `model` node's backbone, told the data's shape (and the text encoder's widths)."""
    known = {
        "input_size": spec.side,
        "image_size": spec.side,
        "in_channels": spec.channels,
        "num_classes": spec.num_classes,
        "learn_sigma": objective_learns_sigma(cfg),
        **(text_encoder.model_arguments() if text_encoder is not None else {}),
    }
    params = inspect.signature(get_object(cfg.model._target_)).parameters
    extra = {k: v for k, v in known.items() if k in params and k not in cfg.model}
    return instantiate(cfg.model, **extra)


def check_objective(cfg: DictConfig, ckpt: dict, path) -> None:
    """Refuse, in one line, to sample a checkpoint with another objective's samplers than the
    one that trained it (files that record none, e.g. official DiT weights, pass)."""
    trained = TrainState.stored_objective(ckpt)
    family = config_family(cfg)
    if trained is not None and trained != family:
        raise ConfigError(
            f"{path} was trained with the {trained} objective, but this config samples with the "
            f"{family} objective's sampler '{cfg.sampler}'; use the training run's diffusion node "
            "(its config.yaml) and one of that objective's samplers"
        )


def build_sampling_model(
    cfg: DictConfig,
    autoencoder,
    device: torch.device,
    text_encoder: nn.Module | None = None,
    without_conditions: str | None = None,
):
    """(model in eval mode with EMA weights unless use_ema_for_sampling=false, checkpoint path,
    its DataSpec); `text_encoder` gives a caption-conditioned model its widths. An adapter file
    (`speed.adapters`) is loaded over its base checkpoint (which must be the one it was trained
    on) and merged into it, so every phase samples a plain backbone; a control branch's file
    (`speed.control`) gives a `ControlledModel` of its base, which samples with control images.
    A caller that gives a model nothing beyond noise, time and labels (`without_conditions`: its
    name, e.g. "the service") gets one line refusing a ControlNet branch (rather than sampling its
    base silently) or a model that needs more inputs (an upsampler's `low_res`). With
    `compile: true` the model's `__call__` is compiled in place (`nn.Module.compile`), so guided
    sampling, whose `forward_with_cfg` calls the model, runs the compiled graph too; its
    state-dict keys stay as they are."""
    target = OmegaConf.select(cfg, "text_encoder._target_", default=None)
    if text_encoder is None and target and getattr(get_object(target), "reads_text", False):
        raise ConfigError(
            f"text_encoder is {target}: this command draws class labels only; sample a "
            "text-to-image model with -p sample or -p inference (prompts=... or prompts_file=...)"
        )
    path = sampling_checkpoint(cfg)
    ckpt = load_checkpoint(path, trust=cfg.trust_checkpoint)
    check_objective(cfg, ckpt, path)
    spec = sampling_data_spec(cfg, autoencoder, ckpt)
    adapter = addon_of_checkpoint(cfg, ckpt)
    if without_conditions and isinstance(adapter, ControlNet):
        raise ConfigError(
            f"{without_conditions}: {path} is a ControlNet branch and {without_conditions} has "
            "no control-image input; sample it with -p sample control.images=<image or folder> "
            "(or -p inference), or give its base checkpoint instead"
        )
    model = build_model(cfg, spec, text_encoder)
    if without_conditions and getattr(model, "conditions", ()):
        raise ConfigError(
            f"{without_conditions}: {path} is a {type(model).__name__}, which also needs "
            f"{', '.join(model.conditions)}, and {without_conditions} has no such input; sample "
            "it with -p sample or -p inference"
        )
    if adapter.enabled:
        adapter.check(ckpt["adapter"], path)
        model = adapter.apply(load_pretrained(model, adapter.base, trust=cfg.trust_checkpoint))
    adapter.load_state_dict(model, extract_state_dict(ckpt, cfg.use_ema_for_sampling), path)
    model = adapter.merge(model).to(device).eval()
    if cfg.compile:
        model.compile()
    return model, path, spec


def addon_of_checkpoint(cfg: DictConfig, ckpt):
    """What a loaded checkpoint needs over its base to be sampled: a `ControlNet` for a control
    branch's file (with the `control` node's base, scale and images), else the adapter
    (`speed.adapters.adapter_of_checkpoint`; NoAdapter for a full model's weights)."""
    record = ckpt.get("adapter") if isinstance(ckpt, dict) else None
    if record and record.get("kind") == ControlNet.kind:
        return ControlNet.from_record(record, build_control(cfg))
    return adapter_of_checkpoint(ckpt, build_adapter(cfg))


def sampling_control(cfg: DictConfig, path) -> ControlNet | None:
    """The ControlNet of the sampled checkpoint at `path` (`build_sampling_model` built its
    model), with the `control` node's scale and images; None for any other checkpoint."""
    control = addon_of_checkpoint(cfg, load_checkpoint(path, trust=cfg.trust_checkpoint))
    return control if isinstance(control, ControlNet) else None


def build_degradation(cfg: DictConfig) -> Degradation:
    """The `data` node's low-res degradation (`low_size`, `blur_sigma`, `noise_std`) without its
    images: what a super-resolution model's inputs were made by."""
    if "low_size" not in cfg.data:
        raise ConfigError(
            "data.low_size is not set: a super-resolution model needs the side of its low-res "
            "inputs (use the data node it was trained with, speed.data.SuperResolution)"
        )
    keys = ("low_size", "blur_sigma", "noise_std")
    return Degradation(**{key: cfg.data[key] for key in keys if key in cfg.data})


def build_control(cfg: DictConfig):
    """The `control` node's ControlNet (`speed.control`; None when control.branch is null)."""
    return instantiate(cfg.control)


def build_adapter(cfg: DictConfig):
    """The `adapter` node's adapter (`speed.adapters`; NoAdapter when adapter.rank is 0)."""
    return instantiate(cfg.adapter)


def build_alignment(cfg: DictConfig, model: nn.Module, spec: DataSpec, dataset) -> nn.Module:
    """The `repa` node's alignment for `model` (`NoAlignment` when repa.lam is 0). The projector
    is sized by one eval-mode forward pass on zeros (no randomness drawn)."""
    if cfg.repa.lam and dataset.is_latent and getattr(dataset, "feature_encoder", None) is None:
        raise ConfigError(
            "repa: REPA's encoder needs the clean images, and this latent cache holds no encoder "
            "features; write it again with -p extract and this repa node, or train from images"
        )
    device = next(model.parameters()).device
    x = torch.zeros(2, spec.channels, spec.side, spec.side, device=device)
    t = torch.zeros(2, device=device)
    y = torch.zeros(2, dtype=torch.long, device=device) if spec.num_classes else None
    was_training = model.training
    model.eval()
    try:
        alignment = instantiate(cfg.repa, model=model, example=(x, t, y))
    finally:
        model.train(was_training)
    cached = getattr(dataset, "feature_encoder", None) if cfg.repa.lam else None
    if cached is not None and cached != alignment.encoder.name:
        raise ConfigError(
            f"repa.encoder is {alignment.encoder.name}, but the latent cache's features were made "
            f"by {cached}; extract again with this encoder, or set it back"
        )
    return alignment


def build_diffusion(cfg: DictConfig):
    return instantiate(cfg.diffusion)


def fused_kwargs(optimizer_class: type, device: torch.device) -> dict:
    """{"fused": True} where `optimizer_class` has a fused kernel for `device` (AdamW: CUDA and,
    since torch 2.4, CPU, where it is 3-4x faster than the foreach path), else {}."""
    takes_fused = "fused" in inspect.signature(optimizer_class).parameters
    return {"fused": True} if takes_fused and device.type in ("cuda", "cpu") else {}


def build_optimizer(cfg: DictConfig, model: nn.Module, device: torch.device, adapter=None):
    """Optimizer over `model`'s parameters (only those `adapter.trainable` gives, with an
    adapter); fused kernels when the optimizer has them (an explicit `optimizer.fused` in the
    config wins)."""
    target = get_object(cfg.optimizer._target_)
    extra = {} if "fused" in cfg.optimizer else fused_kwargs(target, device)
    params = adapter.trainable(model) if adapter is not None else model.parameters()
    return instantiate(cfg.optimizer, params=list(params), **extra)
