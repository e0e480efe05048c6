"""Starting a VQ-VAE run: from scratch, or from another model file (`--init-from`).

`init_parts` says what the new run takes from the file: "all" (its config
and every weight, to keep training it), "encoder" (its encoder, codebook,
F0 predictor and pitch statistics, with a fresh decoder of this config) or
"matching" (every tensor whose name and shape fit this config; with another
speaker table, the voices both know are copied by name).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from speechvq.data.corpus import PreparedCorpus
from speechvq.errors import SpeechVQError

INIT_PARTS = ("all", "encoder", "matching")


def copy_matching(src, dst) -> list[str]:
    """Copy each tensor of `src` whose name and shape `dst` shares; returns those left fresh."""
    theirs = src.state_dict()
    own = dst.state_dict()
    same = {k: v for k, v in theirs.items() if k in own and own[k].shape == v.shape}
    dst.load_state_dict(same, strict=False)
    return [k for k in own if k not in same]


def zero_new_blocks(model, fresh_names: list[str]) -> int:
    """Start the fresh residual blocks of a copied frame network as identities: the last
    layer of each block whose tensors `copy_matching` left fresh is zeroed, where the
    network's input layer was copied (a deeper network grown from a trained one, e.g.
    more `source_filter.layers`). The grown model then begins at the base model's
    output, not at a random perturbation of it. Returns how many blocks."""
    from speechvq.models.frame_net import FrameNet

    fresh, grown = set(fresh_names), 0
    for prefix, net in model.named_modules():
        if not isinstance(net, FrameNet) or any(n.startswith(f"{prefix}.inp.") for n in fresh):
            continue
        for i, block in enumerate(net.blocks):
            if any(name.startswith(f"{prefix}.blocks.{i}.") for name in fresh):
                with torch.no_grad():
                    for param in block[-1].parameters():
                        param.zero_()
                grown += 1
    return grown


def copy_speaker_rows(src, dst) -> int:
    """Rows of the decoder's table of voices, copied by speaker name for the speakers both
    models know; the others start at the mean of the copied rows. Returns how many."""
    a, b = src.decoder.speaker.weight, dst.decoder.speaker.weight
    if a.shape[1] != b.shape[1]:
        return 0
    index = {name: i for i, name in enumerate(src.speakers)}
    known = [(j, index[name]) for j, name in enumerate(dst.speakers) if name in index]
    if not known:
        return 0
    with torch.no_grad():
        rows = torch.stack([a[i] for _, i in known])
        b.copy_(rows.mean(0).expand_as(b))
        for (j, _), row in zip(known, rows, strict=True):
            b[j] = row
    return len(known)


ENCODER_PARTS = ("encoder.", "quantizer.", "pitch.", "logf0_mean", "logf0_std")


def transplant_encoder(src, dst) -> None:
    """Copy the encoder, codebook, F0 predictor and pitch statistics of `src` into `dst`."""
    if src.pitch is None or dst.pitch is None:
        raise SpeechVQError("init_parts: encoder needs the pitch path in both models")
    own = dst.state_dict()
    parts = {k: v for k, v in src.state_dict().items() if k.startswith(ENCODER_PARTS)}
    for k, v in parts.items():
        if k not in own or own[k].shape != v.shape:
            raise SpeechVQError(f"init_parts: encoder: {k} does not fit the new model's config")
    dst.load_state_dict(parts, strict=False)


# With these parts frozen the codes are the base model's, so are the models over them.
CODE_PARTS = ("encoder", "quantizer")


def kept_code_models(cfg: Any, corpus: PreparedCorpus, base: Any = None) -> Any | None:
    """The `--init-from` model (`base` when the caller has loaded it, as a new run
    has; a resumed one reads it again) when this run keeps its codes, else None.

    With the encoder and the codebook frozen (`TrainConfig.frozen`) the codes
    stay the base model's, and so the prior and the packet code trained on
    them stay valid: the run's model files carry the base's (`sample` and the
    entropy-coded bit rate then need no `train-prior`). The prior's speaker
    rows are the speaker table's, so the tables must be the same.
    """
    if not cfg.init_from or not set(CODE_PARTS) <= set(cfg.frozen):
        return None
    if base is None:
        from speechvq.inference.loading import load

        base = load(cfg.init_from)
    if base.prior is None and base.packet_code is None:
        return None
    if list(base.speakers) != corpus.speakers:
        print(f"{cfg.init_from}: another speaker table, so its prior is not kept")
        return None
    return base


def base_model(init_from, corpus: PreparedCorpus, cfg: Any) -> tuple[Any, Any]:
    """The `--init-from` model, checked against the corpus, and the config that records it."""
    from speechvq.inference.loading import load

    base = load(init_from)
    if list(base.speakers) != corpus.speakers and cfg.init_parts != "matching":
        raise SpeechVQError(
            f"{init_from}: its {len(base.speakers)} speakers are not the corpus's "
            f"{len(corpus.speakers)}; --init-from needs the same speaker table "
            "(or init_parts: matching, which leaves the speaker tables fresh)"
        )
    if cfg.init_parts not in INIT_PARTS:
        raise SpeechVQError(
            f"init_parts must be one of {', '.join(INIT_PARTS)}, got {cfg.init_parts!r}"
        )
    return base, dataclasses.replace(
        cfg,
        init_from=str(init_from),
        base_steps=int(base.metadata.get("training_steps", 0)),
        base_hours=float(base.metadata.get("training_hours", 0.0)),
    )


def build_model(model_cfg, base, cfg: Any, corpus, *, fresh: bool, verbose: bool):
    """A new `SpeechVQ`, started from `base` as `cfg.init_parts` says, or with the
    corpus's pitch statistics when it starts from scratch."""
    from speechvq.models.model import SpeechVQ

    model = SpeechVQ(model_cfg)
    if base is not None and cfg.init_parts == "encoder":
        transplant_encoder(base, model)
    elif base is not None and cfg.init_parts == "matching":
        fresh_names = copy_matching(base, model)
        if "decoder.speaker.weight" in fresh_names:  # another speaker table
            copied = copy_speaker_rows(base, model)
            if copied:
                fresh_names.remove("decoder.speaker.weight")
                if verbose:
                    print(f"init_parts matching: {copied} voices copied by name")
        grown = zero_new_blocks(model, fresh_names)
        if grown and verbose:
            print(f"init_parts matching: {grown} new residual blocks start as identities")
        if fresh_names and verbose:
            names = ", ".join(fresh_names[:4])
            print(f"init_parts matching: {len(fresh_names)} tensors start fresh ({names} ...)")
        if "logf0_mean" in fresh_names and model.pitch is not None:  # another speaker table
            model.set_pitch_stats(*pitch_stats(corpus, corpus.speakers))
    elif base is not None:  # a prior in the file is left out: new codes need a new prior
        model.load_state_dict(
            {k: v for k, v in base.state_dict().items() if not k.startswith("prior.")}
        )
    elif fresh and model.pitch is not None:
        model.set_pitch_stats(*pitch_stats(corpus, corpus.speakers))
    return model


def pitch_stats(corpus: PreparedCorpus, speakers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-speaker mean and std of log-F0 over voiced training frames `[S]`."""
    by_spk: dict[str, list[np.ndarray]] = {s: [] for s in speakers}
    for u in corpus.utterances("train"):
        f0 = corpus.f0(u)
        by_spk[u.speaker].append(np.log(f0[f0 > 0]))
    all_voiced = np.concatenate([x for v in by_spk.values() for x in v] or [np.log([150.0])])
    mean, std = [], []
    for s in speakers:
        x = np.concatenate(by_spk[s]) if by_spk[s] else np.zeros(0)
        if x.size < 20:  # too little voiced speech: fall back to the corpus statistics
            x = all_voiced
        mean.append(x.mean())
        std.append(max(x.std(), 0.05))
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
