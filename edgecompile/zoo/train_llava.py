"""Train shapes-llava: a real `LlavaForConditionalGeneration` answering world questions.

    python -m edgecompile.zoo.train_llava --clip edgecompile/zoo/models/shapes-clip \
        --out edgecompile/zoo/models/shapes-llava --seed 0

Why this recipe: the vision tower is copied from shapes-clip and frozen, so its selected
features (penultimate layer, CLS dropped, exactly what LlavaModel.get_image_features
selects) are computed once; each step then trains only the projector and the decoder, which
fits the 20-minute CPU budget. Training stops at `--steps`, at `--target` validation
accuracy on held-out train-split scenes, or after `--max-minutes`. Loss is on the answer tokens and each turn's closing EOS only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPModel, LlavaForConditionalGeneration

from edgecompile.world import generate
from edgecompile.zoo.card import ModelCard, write_card
from edgecompile.zoo.common import Progress, cosine_lr, report_validation, save_checkpoint, setup
from edgecompile.zoo.evaluate import evaluate_llava
from edgecompile.zoo.images import normalize, to_uint8_batch
from edgecompile.zoo.llava_parts import IMAGE_SIZE, build_processor, llava_config, prompt
from edgecompile.zoo.tokenizer import IMAGE

VAL_COUNT = 200


@torch.no_grad()
def vision_features(model: LlavaForConditionalGeneration, pixels: torch.Tensor,
                    batch: int = 256) -> torch.Tensor:
    """Frozen tower features as LlavaModel selects them: hidden_states[-2] without CLS."""
    tower = model.model.vision_tower.eval()
    chunks = []
    for i in range(0, len(pixels), batch):
        out = tower(normalize(pixels[i:i + batch]).to(model.device), output_hidden_states=True)
        chunks.append(out.hidden_states[model.config.vision_feature_layer][:, 1:])
    return torch.cat(chunks)


def expanded_prompt(question: str, n_image_tokens: int) -> str:
    """The prompt as LlavaProcessor feeds it: `<image>` repeated once per image feature."""
    return prompt(question).replace(IMAGE, IMAGE * n_image_tokens)


def encode_examples(tok, scenes, rng: np.random.Generator, idx: np.ndarray,
                    n_image_tokens: int):
    """Build right-padded multi-turn input ids, attention mask and labels for one batch.

    Each sequence asks all of its scene's questions in a shuffled order, one chat turn per
    question (the image only in the first turn). Every answer is supervised, so one pass
    over the image tokens trains three or four answers; the first turn of each sequence is
    exactly the single-question prompt used at inference.
    """
    rows, label_rows = [], []
    for i in idx.tolist():
        qa = [scenes[i].qa[j] for j in rng.permutation(len(scenes[i].qa))]
        ids: list[int] = []
        labels: list[int] = []
        for turn, (question, answer) in enumerate(qa):
            if turn == 0:
                ids_prompt = tok(expanded_prompt(question, n_image_tokens))["input_ids"]
            else:
                ids_prompt = tok(f"user : {question} assistant :", add_special_tokens=False)["input_ids"]
            ids_answer = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            ids += ids_prompt + ids_answer
            labels += [-100] * len(ids_prompt) + ids_answer
        rows.append(ids)
        label_rows.append(labels)
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), tok.pad_token_id)
    labels = torch.full((len(rows), length), -100)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for r, (row, lab) in enumerate(zip(rows, label_rows)):
        input_ids[r, :len(row)] = torch.tensor(row)
        labels[r, :len(lab)] = torch.tensor(lab)
        mask[r, :len(row)] = 1
    return input_ids, mask, labels


def project_into(model, input_ids: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """Token embeddings with image placeholders replaced by projected vision features."""
    image_embeds = model.model.multi_modal_projector(feats)
    mask = (input_ids == model.config.image_token_index)[..., None]
    if int(mask.sum()) != image_embeds.shape[0] * image_embeds.shape[1]:
        raise ValueError(f"{int(mask.sum())} image placeholders for "
                         f"{image_embeds.shape[0] * image_embeds.shape[1]} image features")
    embeds = model.get_input_embeddings()(input_ids)
    return embeds.masked_scatter(mask, image_embeds.reshape(-1, image_embeds.shape[-1]))


@torch.no_grad()
def validation_accuracy(model, tok, scenes, feats: torch.Tensor) -> float:
    """First-answer-token accuracy on held-out train scenes, every question of each.

    Every world answer is one token, so this equals greedy exact match without generating.
    """
    model.eval()
    hits = total = 0
    for q in range(4):
        rows = [(i, s.qa[q]) for i, s in enumerate(scenes) if q < len(s.qa)]
        enc = tok([expanded_prompt(question, feats.shape[1]) for _, (question, _) in rows],
                  padding=True,
                  return_tensors="pt").to(model.device)  # left padding: last position ends the prompt
        embeds = project_into(model, enc["input_ids"], feats[[i for i, _ in rows]])
        logits = model(inputs_embeds=embeds, attention_mask=enc["attention_mask"]).logits[:, -1]
        answers = torch.tensor([tok.convert_tokens_to_ids(a) for _, (_, a) in rows],
                               device=model.device)
        hits += int((logits.argmax(-1) == answers).sum())
        total += len(rows)
    model.train()
    return hits / total


def train(clip_dir: Path, out: Path, seed: int, steps: int, batch: int, train_count: int,
          eval_count: int, threads: int, *, eval_every: int = 100, target: float = 0.97,
          max_minutes: float = 18.0, device: str = "cpu") -> ModelCard:
    """Train, save, reload from disk, evaluate with greedy generation, write the card."""
    setup(seed, threads)
    progress = Progress()
    clip = CLIPModel.from_pretrained(clip_dir)
    processor = build_processor(clip.config.vision_config.patch_size)
    tok = processor.tokenizer
    model = LlavaForConditionalGeneration(
        llava_config(clip.config.vision_config, len(tok), processor.image_token_id))
    model.model.vision_tower.load_state_dict(clip.vision_model.state_dict(), strict=False)
    model.model.vision_tower.requires_grad_(False)
    model = model.to(device)

    scenes = generate("train", train_count, seed=seed, size=IMAGE_SIZE)
    feats = vision_features(model, to_uint8_batch([s.image for s in scenes]))
    val = generate("train", VAL_COUNT, seed=seed, size=IMAGE_SIZE, start=train_count)
    val_feats = vision_features(model, to_uint8_batch([s.image for s in val]))
    print(f"train scenes and features ready in {progress.elapsed():.1f}s", file=sys.stderr)

    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=2e-3, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, warmup=min(100, steps // 10 + 1), peak=2e-3)
        idx = rng.choice(train_count, size=batch, replace=False)
        input_ids, mask, labels = (t.to(device) for t in encode_examples(tok, scenes, rng, idx,
                                                                        feats.shape[1]))
        inputs_embeds = project_into(model, input_ids, feats[torch.from_numpy(idx)])
        loss = model(inputs_embeds=inputs_embeds, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        progress.maybe(f"step {step}/{steps} loss {loss.item():.4f}")
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            if report_validation(progress, step + 1, validation_accuracy(model, tok, val, val_feats), target, max_minutes):
                break
    steps_run = step + 1
    train_seconds = progress.elapsed()

    model = save_checkpoint(model, processor, out)
    accuracy = evaluate_llava(out, eval_count, seed=0)
    card = ModelCard(
        name=out.name, kind="generative", task="visual question answering",
        metric="exact match (greedy)", eval_accuracy=round(accuracy, 4), eval_count=eval_count,
        eval_split="eval", train_seconds=round(train_seconds, 1), train_threads=threads,
        seed=seed, parameters=sum(p.numel() for p in model.parameters()),
        train_steps=steps_run, train_cpu_seconds=round(progress.cpu_seconds(), 1),
        train_command=f"python -m edgecompile.zoo.train_llava --clip {clip_dir} --out {out} "
                      f"--seed {seed} --steps {steps} --batch {batch} --train-count {train_count} "
                      f"--eval-every {eval_every} --target {target} --max-minutes {max_minutes} "
                      f"--threads {threads} --device {device}",
    )
    write_card(out, card)
    return card


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, required=True, help="trained shapes-clip directory")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--eval-every", type=int, default=100,
                        help="check validation accuracy (held-out train scenes) this often")
    parser.add_argument("--target", type=float, default=0.97,
                        help="stop early once validation accuracy reaches this")
    parser.add_argument("--max-minutes", type=float, default=18.0,
                        help="stop after this much training time (the CPU budget)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--train-count", type=int, default=8000)
    parser.add_argument("--eval-count", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="torch device to train on")
    args = parser.parse_args(argv)
    card = train(args.clip, args.out, args.seed, args.steps, args.batch, args.train_count,
                 args.eval_count, args.threads, eval_every=args.eval_every,
                 target=args.target, max_minutes=args.max_minutes, device=args.device)
    print(card.model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
