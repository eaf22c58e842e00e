"""Train shapes-clip: a small real `CLIPModel` on the world's train split.

    python -m edgecompile.zoo.train_clip --out edgecompile/zoo/models/shapes-clip --seed 0

The bundled weights were trained in three stages (`--init` continues a checkpoint); the
exact commands are in the model's edgecompile_card.json.

Training stops at `--steps`, when zero-shot accuracy on held-out train-split scenes reaches
`--target`, or after `--max-minutes` (the machines are shared, so wall time varies).

Why a multi-positive contrastive loss: the world has 16 classes, so a batch holds many
images of the same class; treating same-class texts as positives (instead of CLIP's
one-positive diagonal) avoids pushing apart captions that describe the same thing.
The card records wall seconds and CPU seconds (the machines are shared, so wall time
depends on the neighbours; CPU seconds / threads is the uncontended estimate).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel, CLIPProcessor

from edgecompile.data.evaluators import zero_shot_accuracy
from edgecompile.world import CLASS_NAMES, class_prompt, generate
from edgecompile.zoo.card import ModelCard, read_card, write_card
from edgecompile.zoo.common import Progress, cosine_lr, report_validation, save_checkpoint, setup
from edgecompile.zoo.evaluate import evaluate_clip
from edgecompile.zoo.images import image_processor, normalize, to_uint8_batch
from edgecompile.zoo.tokenizer import build_tokenizer, wrap

IMAGE_SIZE = 96
TEXT_LENGTH = 16
VAL_COUNT = 256
PEAK_LR = 2e-3
TEMPLATES = ("a photo of a {label}", "a {label}", "{caption}", "an image with {caption}")


def clip_config(vocab_size: int, patch_size: int = 16, vision_layers: int = 4, vision_hidden: int = 128,
                vision_mlp: int = 256, vision_heads: int = 4) -> CLIPConfig:
    """The shapes-clip architecture: ViT 4x128 (MLP 256, patch 16 on 96px), text 3x128, proj 128.

    The vision tower's size is a parameter so that a larger sibling (shapes-clip-l, ViT 6x192 with a
    4x MLP) can be trained by the same script: 4x128 is small enough that INT4 weights cost it
    nothing measurable, which hides the seed-002 robustness gap.
    """
    return CLIPConfig(
        text_config={
            "vocab_size": vocab_size, "hidden_size": 128, "intermediate_size": 512,
            "num_hidden_layers": 3, "num_attention_heads": 4,
            "max_position_embeddings": TEXT_LENGTH,
            "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3,
        },
        vision_config={
            "hidden_size": vision_hidden, "intermediate_size": vision_mlp, "num_hidden_layers": vision_layers,
            "num_attention_heads": vision_heads, "image_size": IMAGE_SIZE, "patch_size": patch_size,
        },
        projection_dim=128,
    )


def build_processor() -> CLIPProcessor:
    """Tokenizer + image processor saved next to the weights."""
    tok = wrap(build_tokenizer(with_image_token=False, add_bos_eos=True),
               model_max_length=TEXT_LENGTH)
    return CLIPProcessor(image_processor=image_processor(IMAGE_SIZE), tokenizer=tok)


@torch.no_grad()
def validation_accuracy(model: CLIPModel, tok, val_pixels: torch.Tensor,
                        val_labels: torch.Tensor) -> float:
    """Zero-shot accuracy on held-out *train-split* scenes (the eval split stays unseen)."""
    model.eval()
    enc = tok([class_prompt(c) for c in CLASS_NAMES], padding="max_length",
              max_length=TEXT_LENGTH, return_tensors="pt")
    enc = enc.to(model.device)
    text = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    image = model.get_image_features(pixel_values=normalize(val_pixels).to(model.device))
    text, image = _tensor(text).cpu(), _tensor(image).cpu()
    model.train()
    return zero_shot_accuracy(image.numpy(), text.numpy(), val_labels.tolist())


def _tensor(out: object) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def contrastive_loss(model: CLIPModel, tok, pixel_values: torch.Tensor, labels: torch.Tensor,
                     texts: list[str]) -> torch.Tensor:
    """Symmetric multi-positive CLIP loss over the batch's *distinct* texts.

    A text is a positive for every image of its class. Encoding each distinct text once
    (a batch repeats many) keeps the text tower's share of the compute small.
    """
    unique = sorted(set(texts))
    text_labels = torch.tensor([int(labels[texts.index(t)]) for t in unique])
    enc = tok(unique, padding="max_length", max_length=TEXT_LENGTH, return_tensors="pt")
    enc, pixel_values = enc.to(model.device), pixel_values.to(model.device)
    labels, text_labels = labels.to(model.device), text_labels.to(model.device)
    out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                pixel_values=pixel_values)
    positives = (labels[:, None] == text_labels[None, :]).float()
    logits = out.logits_per_image  # images x distinct texts
    image_to_text = -(positives / positives.sum(1, keepdim=True) * F.log_softmax(logits, 1)).sum(1)
    text_to_image = -(positives.T / positives.T.sum(1, keepdim=True)
                      * F.log_softmax(logits.T, 1)).sum(1)
    return 0.5 * (image_to_text.mean() + text_to_image.mean())


def train(out: Path, seed: int, steps: int, batch: int, train_count: int, eval_count: int,
          threads: int, *, eval_every: int = 100, target: float = 0.96,
          max_minutes: float = 18.0, device: str = "cpu",
          patch_size: int = 16, peak_lr: float = PEAK_LR, init: Path | None = None,
          vision: tuple[int, int, int, int] = (4, 128, 256, 4)) -> ModelCard:
    """Train, save with save_pretrained, reload from disk, evaluate and write the card."""
    setup(seed, threads)
    progress = Progress()
    processor = build_processor()
    tok = processor.tokenizer
    scenes = generate("train", train_count, seed=seed, size=IMAGE_SIZE)
    pixels = to_uint8_batch([s.image for s in scenes])
    labels = torch.tensor([CLASS_NAMES.index(s.label) for s in scenes])
    val = generate("train", VAL_COUNT, seed=seed, size=IMAGE_SIZE, start=train_count)
    val_pixels = to_uint8_batch([s.image for s in val])
    val_labels = torch.tensor([CLASS_NAMES.index(s.label) for s in val])
    print(f"generated {train_count} train scenes in {progress.elapsed():.1f}s", file=sys.stderr)

    if init is None:
        model = CLIPModel(clip_config(len(tok), patch_size, *vision)).to(device)
        before = None
    else:  # continue training a checkpoint (a second stage); the card sums both stages
        model = CLIPModel.from_pretrained(init).to(device)
        before = read_card(init)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=peak_lr, weight_decay=0.05)
    rng = np.random.default_rng(seed)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, warmup=min(100, steps // 10 + 1), peak=peak_lr)
        idx = torch.from_numpy(rng.choice(train_count, size=batch, replace=False))
        texts = [TEMPLATES[rng.integers(len(TEMPLATES))].format(
            label=scenes[i].label, caption=scenes[i].caption) for i in idx.tolist()]
        loss = contrastive_loss(model, tok, normalize(pixels[idx]), labels[idx], texts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
        progress.maybe(f"step {step}/{steps} loss {loss.item():.4f}")
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            if report_validation(progress, step + 1, validation_accuracy(model, tok, val_pixels, val_labels), target, max_minutes):
                break
    steps_run = step + 1
    train_seconds = progress.elapsed()

    model = save_checkpoint(model, processor, out)
    accuracy = evaluate_clip(out, eval_count, seed=0)
    command = (f"python -m edgecompile.zoo.train_clip --out {out} --seed {seed} "
               f"--steps {steps} --batch {batch} --train-count {train_count} "
               f"--eval-every {eval_every} --target {target} --max-minutes {max_minutes} "
               f"--threads {threads} --device {device} --patch-size {patch_size} --lr {peak_lr}"
               + (f" --vision {','.join(map(str, vision))}" if init is None and vision != (4, 128, 256, 4) else "")
               + (f" --init {init}" if init else ""))
    cpu_seconds = progress.cpu_seconds()
    if before is not None:
        command = f"{before.train_command} && {command}"
        train_seconds += before.train_seconds
        cpu_seconds += before.train_cpu_seconds
        steps_run += before.train_steps
    card = ModelCard(
        name=out.name, kind="dual_encoder", task="zero-shot classification",
        metric="top-1 accuracy", eval_accuracy=round(accuracy, 4), eval_count=eval_count,
        eval_split="eval", train_seconds=round(train_seconds, 1), train_threads=threads,
        seed=seed, parameters=sum(p.numel() for p in model.parameters()),
        train_steps=steps_run, train_cpu_seconds=round(cpu_seconds, 1),
        train_command=command,
    )
    write_card(out, card)
    return card


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--eval-every", type=int, default=100,
                        help="check validation accuracy (held-out train scenes) this often")
    parser.add_argument("--target", type=float, default=0.96,
                        help="stop early once validation accuracy reaches this")
    parser.add_argument("--max-minutes", type=float, default=18.0,
                        help="stop after this much training time (the CPU budget)")
    parser.add_argument("--train-count", type=int, default=6000)
    parser.add_argument("--eval-count", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="torch device to train on")
    parser.add_argument("--patch-size", type=int, default=16, choices=(12, 16, 24, 32))
    parser.add_argument("--lr", type=float, default=PEAK_LR, help="peak learning rate")
    parser.add_argument("--init", type=Path, default=None,
                        help="continue from this trained checkpoint (second stage)")
    parser.add_argument("--vision", default="4,128,256,4",
                        help="vision tower layers,hidden,mlp,heads (new models only; --init keeps the checkpoint's)")
    args = parser.parse_args(argv)
    vision = tuple(int(v) for v in args.vision.split(","))
    if len(vision) != 4:
        parser.error("--vision: expected layers,hidden,mlp,heads, e.g. 6,192,768,6")
    card = train(args.out, args.seed, args.steps, args.batch, args.train_count,
                 args.eval_count, args.threads, eval_every=args.eval_every,
                 target=args.target, max_minutes=args.max_minutes, device=args.device,
                 patch_size=args.patch_size, peak_lr=args.lr, init=args.init, vision=vision)
    print(card.model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
