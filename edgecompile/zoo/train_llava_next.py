"""Train shapes-llava-next: a real `LlavaNextForConditionalGeneration` (anyres 2x2) on world questions.

    python -m edgecompile.zoo.train_llava_next --clip edgecompile/zoo/models/shapes-clip \
        --expand edgecompile/zoo/models/shapes-llava \
        --out edgecompile/zoo/models/shapes-llava-next --seed 0 --threads 1

Why this recipe:

* The vision tower is shapes-clip's, frozen, so each image's five tower inputs (the 96-px base
  image and the four 96-px tiles of the 192-px grid, exactly what `LlavaNextImageProcessorPil`
  produces) go through it once; training steps run only the projector, `image_newline` and the
  decoder. Features are spliced exactly as `LlavaNextModel.pack_image_features` packs them
  (:func:`pack`; :func:`check_splice` asserts the logits equal HF's own forward on pixel_values).
* Cheap init by function-preserving depth expansion of shapes-llava (same tokenizer, hidden 128,
  GQA 4/2 heads): its projector, embeddings, final norm, lm_head and its 2 decoder layers are
  copied into layers 0-1; the 6 new layers 2-7 get zero `o_proj` and `down_proj`, so each is the
  identity on the residual stream and the expanded decoder computes exactly what shapes-llava did
  on the same embeddings. Fine-tuning then trains everything except the tower.
* Half of the training images are rendered at 192 px, the other half at 96 px and upscaled to the
  grid with PIL bicubic (what the edgecompile adapter does with a 96-px image), so the model answers
  from both a sharp and a blurred tile map: the build's eval set renders at 96 px.

Training stops at `--steps`, at `--target` validation accuracy on held-out train-split scenes, or
after `--max-minutes`; `--init` resumes from a saved shapes-llava-next directory instead of expanding.
Loss is on the answer tokens and each turn's closing EOS only (multi-turn sequences, as train_llava).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import CLIPModel, LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

from edgecompile.world import generate
from edgecompile.zoo.card import ModelCard, write_card
from edgecompile.zoo.common import Progress, cosine_lr, report_validation, save_checkpoint, setup
from edgecompile.zoo.evaluate import evaluate_llava
from edgecompile.zoo.llava_next_parts import GRID, GRID_SIZE, TILE_SIZE, build_processor, llava_next_config
from edgecompile.zoo.train_llava import encode_examples, expanded_prompt

VAL_COUNT = 200


def grid_image(image: Image.Image) -> Image.Image:
    """The image at the grid's resolution: a 96-px render is upscaled as the edgecompile adapter does."""
    image = image.convert("RGB")
    if image.size != (GRID_SIZE, GRID_SIZE):
        image = image.resize((GRID_SIZE, GRID_SIZE), Image.Resampling.BICUBIC)
    return image


@torch.no_grad()
def vision_features(model: LlavaNextForConditionalGeneration, processor, images: list[Image.Image],
                    batch: int = 100, dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """Frozen tower features [N, 1 + rows*cols, patches, C]: hidden_states[-2] without CLS, per tile.

    Stored as float16 by default: 6000 images x 5 tiles x 36 patches x 128 is 276 MB, not 553.
    """
    tower = model.model.vision_tower.eval()
    chunks = []
    for i in range(0, len(images), batch):
        pix = processor.image_processor(images=[grid_image(im) for im in images[i:i + batch]],
                                        return_tensors="pt")["pixel_values"]
        n, t = pix.shape[:2]
        out = tower(pix.reshape(n * t, *pix.shape[2:]), output_hidden_states=True)
        feats = out.hidden_states[model.config.vision_feature_layer][:, 1:]
        chunks.append(feats.reshape(n, t, *feats.shape[1:]).to(dtype))
    return torch.cat(chunks)


def pack(model: LlavaNextForConditionalGeneration, feats: torch.Tensor) -> torch.Tensor:
    """Projected, packed image embeddings [N, tokens, hidden], as pack_image_features lays them out.

    Base tile tokens, then the (rows*side) x (cols*side) tile map row by row, each row closed by
    `image_newline`. Nothing is unpadded: every image is exactly the grid's resolution.
    """
    proj = model.model.multi_modal_projector(feats.float())  # [N, T, side*side, C]
    n, _, p, c = proj.shape
    side = int(round(p ** 0.5))
    rows, cols = GRID
    grid = proj[:, 1:].reshape(n, rows, cols, side, side, c).permute(0, 5, 1, 3, 2, 4)
    grid = grid.reshape(n, c, rows * side, cols * side)
    newline = model.model.image_newline[None, :, None, None].expand(n, c, rows * side, 1)
    grid = torch.cat((grid, newline), dim=-1).flatten(2).transpose(1, 2)
    return torch.cat((proj[:, 0], grid), dim=1)


def project_into(model, input_ids: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """Token embeddings with the image placeholders replaced by the packed image embeddings."""
    image_embeds = pack(model, feats)
    mask = (input_ids == model.config.image_token_index)[..., None]
    if int(mask.sum()) != image_embeds.shape[0] * image_embeds.shape[1]:
        raise ValueError(f"{int(mask.sum())} image placeholders for "
                         f"{image_embeds.shape[0] * image_embeds.shape[1]} image features")
    embeds = model.get_input_embeddings()(input_ids)
    return embeds.masked_scatter(mask, image_embeds.reshape(-1, image_embeds.shape[-1]))


@torch.no_grad()
def check_splice(model, processor, images: list[Image.Image], questions: list[str]) -> float:
    """Max |logit difference| between HF's forward on pixel_values and this module's splice.

    Raises if they differ: training on a layout other than inference's would silently waste the run.
    """
    model.eval()
    enc = processor(images=[grid_image(im) for im in images],
                    text=[expanded_prompt(q, 1) for q in questions], padding=True, return_tensors="pt")
    ref = model(**enc).logits
    feats = vision_features(model, processor, images, dtype=torch.float32)
    ours = model(inputs_embeds=project_into(model, enc["input_ids"], feats),
                 attention_mask=enc["attention_mask"]).logits
    diff = float((ref - ours).abs().max())
    if diff > 1e-3:
        raise RuntimeError(f"training splice differs from LlavaNextForConditionalGeneration: max |dlogit| {diff}")
    model.train()
    return diff


def expand_from(llava_dir: Path, model: LlavaNextForConditionalGeneration) -> None:
    """Copy shapes-llava's projector, embeddings, 2 decoder layers, norm and lm_head; new layers start as identity."""
    source = LlavaForConditionalGeneration.from_pretrained(llava_dir).state_dict()
    state = {k: v for k, v in source.items() if not k.startswith("model.vision_tower.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"{llava_dir}: weights with no place in the expanded model: {unexpected[:5]}")
    old = sum(1 for k in source if k.endswith("mlp.down_proj.weight"))
    layers = model.model.language_model.layers
    with torch.no_grad():
        for layer in layers[old:]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()


@torch.no_grad()
def validation_accuracy(model, tok, scenes, feats: torch.Tensor, n_image_tokens: int,
                        batch: int = 100) -> float:
    """First-answer-token accuracy on held-out scenes, every question (all answers are one token)."""
    model.eval()
    hits = total = 0
    for q in range(4):
        rows = [(i, s.qa[q]) for i, s in enumerate(scenes) if q < len(s.qa)]
        for b in range(0, len(rows), batch):
            part = rows[b:b + batch]
            enc = tok([expanded_prompt(question, n_image_tokens) for _, (question, _) in part],
                      padding=True, return_tensors="pt")  # left padding: the last position ends the prompt
            embeds = project_into(model, enc["input_ids"], feats[[i for i, _ in part]])
            logits = model(inputs_embeds=embeds, attention_mask=enc["attention_mask"]).logits[:, -1]
            answers = torch.tensor([tok.convert_tokens_to_ids(a) for _, (_, a) in part])
            hits += int((logits.argmax(-1) == answers).sum())
            total += len(part)
    model.train()
    return hits / total


def train(clip_dir: Path, out: Path, seed: int, steps: int, batch: int, train_count: int,
          eval_count: int, threads: int, *, expand: Path | None = None, init: Path | None = None,
          eval_every: int = 100, target: float = 0.97, max_minutes: float = 30.0,
          lr: float = 1e-3) -> ModelCard:
    """Train, save, reload from disk, evaluate with greedy generation, write the card."""
    setup(seed, threads)
    progress = Progress()
    clip = CLIPModel.from_pretrained(clip_dir)
    processor = build_processor(clip.config.vision_config.patch_size)
    tok = processor.tokenizer
    if init is not None:
        model = LlavaNextForConditionalGeneration.from_pretrained(init)
    else:
        model = LlavaNextForConditionalGeneration(
            llava_next_config(clip.config.vision_config, len(tok), processor.image_token_id))
        model.model.vision_tower.load_state_dict(clip.vision_model.state_dict(), strict=False)
        if expand is not None:
            expand_from(expand, model)
    model.model.vision_tower.requires_grad_(False)

    sharp = train_count // 2  # scenes 0..sharp-1 rendered at 192 px, the rest at 96 px and upscaled
    scenes = (generate("train", sharp, seed=seed, size=GRID_SIZE)
              + generate("train", train_count - sharp, seed=seed, size=TILE_SIZE, start=sharp))
    val = (generate("train", VAL_COUNT // 2, seed=seed, size=GRID_SIZE, start=train_count)
           + generate("train", VAL_COUNT - VAL_COUNT // 2, seed=seed, size=TILE_SIZE,
                      start=train_count + VAL_COUNT // 2))
    print(f"splice check: max |dlogit| {check_splice(model, processor, [s.image for s in val[-4:]], [s.qa[0][0] for s in val[-4:]]):.2e}",
          file=sys.stderr)
    feats = vision_features(model, processor, [s.image for s in scenes])
    val_feats = vision_features(model, processor, [s.image for s in val])
    n_tokens = int(pack(model, val_feats[:1]).shape[1])
    print(f"{len(scenes)} train scenes, features {tuple(feats.shape)}, {n_tokens} image tokens, "
          f"ready in {progress.elapsed():.1f}s", file=sys.stderr)
    report_validation(progress, 0, validation_accuracy(model, tok, val, val_feats, n_tokens), 2.0, max_minutes)

    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, warmup=min(50, steps // 10 + 1), peak=lr)
        idx = rng.choice(train_count, size=batch, replace=False)
        input_ids, mask, labels = encode_examples(tok, scenes, rng, idx, n_tokens)
        inputs_embeds = project_into(model, input_ids, feats[torch.from_numpy(idx)])
        loss = model(inputs_embeds=inputs_embeds, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        progress.maybe(f"step {step}/{steps} loss {loss.item():.4f}")
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            if report_validation(progress, step + 1, validation_accuracy(model, tok, val, val_feats, n_tokens),
                                 target, max_minutes):
                break
    steps_run = step + 1
    train_seconds = progress.elapsed()
    cpu_seconds = progress.cpu_seconds()

    model = save_checkpoint(model, processor, out)
    accuracy = evaluate_llava(out, eval_count, seed=0, size=GRID_SIZE)
    source = f"--init {init}" if init is not None else (f"--expand {expand}" if expand is not None else "")
    card = ModelCard(
        name=out.name, kind="generative", task="visual question answering",
        metric="exact match (greedy)", eval_accuracy=round(accuracy, 4), eval_count=eval_count,
        eval_split="eval", train_seconds=round(train_seconds, 1), train_threads=threads,
        seed=seed, parameters=sum(p.numel() for p in model.parameters()),
        train_steps=steps_run, train_cpu_seconds=round(cpu_seconds, 1),
        train_command=f"python -m edgecompile.zoo.train_llava_next --clip {clip_dir} {source} --out {out} "
                      f"--seed {seed} --steps {steps} --batch {batch} --train-count {train_count} "
                      f"--eval-every {eval_every} --target {target} --max-minutes {max_minutes} "
                      f"--lr {lr} --threads {threads}",
    )
    write_card(out, card)
    return card


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, required=True, help="trained shapes-clip directory (the frozen tower)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--expand", type=Path, help="shapes-llava directory to depth-expand from")
    start.add_argument("--init", type=Path, help="shapes-llava-next directory to resume from")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=50,
                        help="check validation accuracy (held-out train scenes) this often")
    parser.add_argument("--target", type=float, default=0.97,
                        help="stop early once validation accuracy reaches this")
    parser.add_argument("--max-minutes", type=float, default=30.0,
                        help="stop after this much training time (the CPU budget)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--train-count", type=int, default=6000)
    parser.add_argument("--eval-count", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    card = train(args.clip, args.out, args.seed, args.steps, args.batch, args.train_count,
                 args.eval_count, args.threads, expand=args.expand, init=args.init,
                 eval_every=args.eval_every, target=args.target, max_minutes=args.max_minutes, lr=args.lr)
    print(card.model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
