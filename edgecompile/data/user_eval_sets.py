"""Eval sets from the user's own data, defined by YAML files in `eval_sets/` (or a path).

    es = load_user_eval_set(Path("eval_sets/my-pets.yaml"))
    es.samples       # a lazy sequence: len() and indexing; each image is opened when `.image` is read
    es.prompts       # what the text encoder sees (class prompts, or the captions for retrieval)

Everything that can be checked without decoding images is checked at load: the YAML's fields,
every line of a labels/JSONL file, and that every image file exists. Errors name the file, the
line and the field. Images are never held all at once: a sample keeps its path and opens the file
each time its `.image` is read, so memory stays constant whatever the set's size.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, TypeAdapter, ValidationError

from edgecompile.data.errors import DataError
from edgecompile.data.eval_definitions import (
    CaptioningSetDefinition, ClassificationSetDefinition, EvalSetDefinition, LabelLine, PairLine,
    QuestionLine, ReferenceLine, RetrievalSetDefinition, VqaSetDefinition,
)
from edgecompile.data.folder_source import IMAGE_SUFFIXES, truncation
from edgecompile.data.yaml_errors import format_validation_error, load_yaml_mapping
from edgecompile.errors import InputError

_ADAPTER = TypeAdapter(EvalSetDefinition)


@dataclass(frozen=True)
class LazySample:
    """Duck-types :class:`edgecompile.data.samples.Sample`; the image is read from disk on access."""

    path: Path
    text: str | None = None
    label: str | None = None
    question: str | None = None
    answer: str | None = None
    answers: tuple[str, ...] = ()
    reference: str | None = None
    where: str = ""  # the line that named this image, for error messages

    @property
    def image(self) -> Image.Image:
        try:
            with Image.open(self.path) as im:
                return im.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise InputError(f"{self.where or self.path}: image: cannot read {self.path} ({exc.__class__.__name__}: {exc})") from None


class SampleSequence(Sequence[LazySample]):
    """A read-only sequence of lazy samples (holds paths and labels, never pixels)."""

    def __init__(self, samples: Sequence[LazySample]) -> None:
        self._samples = tuple(samples)

    def __len__(self) -> int:
        return len(self._samples)

    @overload
    def __getitem__(self, index: int) -> LazySample: ...
    @overload
    def __getitem__(self, index: slice) -> SampleSequence: ...
    def __getitem__(self, index: int | slice) -> LazySample | SampleSequence:
        if isinstance(index, slice):
            return SampleSequence(self._samples[index])
        return self._samples[index]

    def __iter__(self) -> Iterator[LazySample]:
        return iter(self._samples)


@dataclass(frozen=True)
class UserEvalSet:
    """A validated user eval set: what the adapters' ``evaluate`` reads.

    ``task`` is the definition's kind. Classification: ``prompts`` holds every class's templates
    (class-major, ``templates_per_class`` each) and ``class_names`` the classes. Retrieval:
    ``samples`` holds one sample per distinct image, ``prompts`` every caption and
    ``caption_image[t]`` the index of caption ``t``'s image. VQA and captioning: one sample per line.
    """

    name: str
    task: str
    source: Path
    samples: SampleSequence
    prompts: list[str] = field(default_factory=list)
    class_names: list[str] | None = None
    templates_per_class: int = 1
    caption_image: list[int] | None = None
    content_hash: str = ""

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[LazySample]:
        return iter(self.samples)

    def fingerprint(self) -> str:
        """sha256 of the definition, the samples' ground truth and each image's size and mtime (no pixels read)."""
        h = hashlib.sha256(self.content_hash.encode())
        for path in dict.fromkeys(s.path for s in self.samples):
            st = path.stat()
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        return h.hexdigest()

    def limited(self, count: int) -> UserEvalSet:
        """The first ``count`` samples (retrieval: the first ``count`` images with all their captions)."""
        if count >= len(self.samples):
            return self
        if self.task != "retrieval":
            return _replace(self, samples=self.samples[:count])
        owner = self.caption_image or []
        keep = [t for t, i in enumerate(owner) if i < count]
        return _replace(self, samples=self.samples[:count], prompts=[self.prompts[t] for t in keep], caption_image=[owner[t] for t in keep])


def _replace(es: UserEvalSet, **changes: Any) -> UserEvalSet:
    from dataclasses import replace

    return replace(es, **changes)


# --- loading ----------------------------------------------------------------------------------------
def load_user_eval_set(path: Path) -> UserEvalSet:
    """Load and validate an eval-set YAML file (DataError naming file:line: field on any problem)."""
    data, lines = load_yaml_mapping(path)
    try:
        definition = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise format_validation_error(path, exc, lines) from None
    if definition.name != path.stem:
        raise DataError(f"{path}:{lines.get('name', 1)}: name: expected {path.stem!r} (the file's name), got {definition.name!r}")
    base = path.parent
    if isinstance(definition, ClassificationSetDefinition):
        es = _classification(definition, path, base, lines)
    elif isinstance(definition, RetrievalSetDefinition):
        es = _retrieval(definition, _data_file(path, base, definition.captions, "captions", lines))
    elif isinstance(definition, VqaSetDefinition):
        es = _vqa(definition, _data_file(path, base, definition.questions, "questions", lines))
    else:
        es = _captioning(definition, _data_file(path, base, definition.references, "references", lines))
    if not es.samples:
        raise DataError(f"{path}: {definition.type} eval set {definition.name!r} holds no samples")
    return es


def _data_file(yaml_path: Path, base: Path, value: str, fieldname: str, lines: dict[str, int]) -> Path:
    candidate = (base / value).resolve()
    if not candidate.is_file():
        raise DataError(f"{yaml_path}:{lines.get(fieldname, 1)}: {fieldname}: {candidate} not found")
    return candidate


def _image(where: str, folder: Path, value: str, fieldname: str) -> Path:
    image = (folder / value).resolve()
    if image.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{where}: {fieldname}: {value!r} is not an image file (expected a name ending in {', '.join(IMAGE_SUFFIXES)})")
    if not image.is_file():
        raise DataError(f"{where}: {fieldname}: image {image} not found")
    cut = truncation(image)  # cheap (the file's tail): decoding is left for when the sample is read
    if cut is not None:
        raise DataError(f"{where}: {fieldname}: image {image} is unreadable ({cut})")
    return image


def _jsonl(path: Path, model: type[BaseModel]) -> Iterator[tuple[str, Any]]:
    """Yield (``file:line``, validated line) for every non-blank line of a JSONL file."""
    expected = ", ".join(f"'{name}'" for name in model.model_fields)
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            yield where, model.model_validate(json.loads(raw))
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: invalid JSON ({exc.msg}); expected an object with the fields {expected}") from None
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(map(str, err["loc"])) or "(line)"
            msg = {"extra_forbidden": "unknown field", "missing": "required field is missing"}.get(err["type"], err["msg"])
            raise DataError(f"{where}: {loc}: {msg} (expected the fields {expected})") from None


def _hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()


def _classification(d: ClassificationSetDefinition, yaml_path: Path, base: Path, lines: dict[str, int]) -> UserEvalSet:
    if (d.path is None) == (d.labels is None):
        line = lines.get("labels" if d.labels is not None else "type", 1)
        raise DataError(f"{yaml_path}:{line}: path/labels: give exactly one of 'path' (an ImageFolder tree) or 'labels' (a CSV/JSONL of file,label)")
    if d.path is not None:
        labelled = _image_folder(yaml_path, (base / d.path).resolve(), lines)
    else:
        labelled = _labels_file(_data_file(yaml_path, base, d.labels or "", "labels", lines))
    found = sorted({label for _, label, _ in labelled})
    classes = list(d.classes) if d.classes is not None else found
    if len(classes) < 2:
        raise DataError(f"{yaml_path}: classes: zero-shot classification needs at least two classes, found {classes}")
    unknown = [(where, label) for _, label, where in labelled if label not in classes]
    if unknown:
        where, label = unknown[0]
        raise DataError(f"{where}: label: {label!r} is not one of the classes listed at {yaml_path}:{lines.get('classes', 1)} ({len(unknown)} sample(s) like it)")
    stray = sorted(set(d.class_text) - set(classes))
    if stray:
        raise DataError(f"{yaml_path}:{lines.get('class_text', 1)}: class_text: names {', '.join(stray)}, which are not classes of this set")
    words = {c: d.class_text.get(c, c.replace("_", " ")) for c in classes}
    prompts = [t.replace("{}", words[c]) for c in classes for t in d.templates]
    samples = [LazySample(path=p, label=label, where=where) for p, label, where in labelled]
    return UserEvalSet(d.name, "classification", yaml_path, SampleSequence(samples), prompts, classes, len(d.templates),
                       content_hash=_hash(d.model_dump_json(), *[(s.path, s.label) for s in samples]))


def _image_folder(yaml_path: Path, root: Path, lines: dict[str, int]) -> list[tuple[Path, str, str]]:
    """(image, class, where) for an ImageFolder tree, classes interleaved so the first N samples cover every class."""
    where = f"{yaml_path}:{lines.get('path', 1)}"
    if not root.is_dir():
        raise DataError(f"{where}: path: expected a folder with one sub-folder per class; {root} is not a directory")
    per_class = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if images:
            per_class[folder.name] = images
    if not per_class:
        raise DataError(f"{where}: path: {root} holds no class folders with images (expected {root}/<class>/<image> with names ending in {', '.join(IMAGE_SUFFIXES)})")
    for images in per_class.values():
        for image in images:
            cut = truncation(image)  # cheap (the file's tail): decoding is left for when the sample is read
            if cut is not None:
                raise DataError(f"{where}: path: image {image} is unreadable ({cut})")
    out = []
    for rank in range(max(len(v) for v in per_class.values())):
        out += [(images[rank], name, where) for name, images in per_class.items() if rank < len(images)]
    return out


def _labels_file(path: Path) -> list[tuple[Path, str, str]]:
    """(image, label, where) from a CSV with a ``file,label`` header or a JSONL of ``{"file", "label"}``."""
    rows: list[tuple[str, LabelLine]] = []
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or [h.strip() for h in header] != ["file", "label"]:
                raise DataError(f"{path}:1: header: expected the columns 'file,label', got {','.join(header or [])!r}")
            for row in reader:
                where = f"{path}:{reader.line_num}"
                if not row or not any(c.strip() for c in row):
                    continue
                if len(row) != 2 or not row[0].strip() or not row[1].strip():
                    raise DataError(f"{where}: expected two non-empty columns 'file,label', got {row!r}")
                rows.append((where, LabelLine(file=row[0].strip(), label=row[1].strip())))
    else:
        rows = list(_jsonl(path, LabelLine))
    return [(_image(where, path.parent, line.file, "file"), line.label, where) for where, line in rows]


def _retrieval(d: RetrievalSetDefinition, path: Path) -> UserEvalSet:
    images: dict[Path, int] = {}
    samples, prompts, owner = [], [], []
    for where, line in _jsonl(path, PairLine):
        image = _image(where, path.parent, line.image, "image")
        if image not in images:
            images[image] = len(samples)
            samples.append(LazySample(path=image, text=line.caption, where=where))
        prompts.append(line.caption)
        owner.append(images[image])
    return UserEvalSet(d.name, "retrieval", path, SampleSequence(samples), prompts, caption_image=owner,
                       content_hash=_hash(d.model_dump_json(), *zip([s.path for s in samples], prompts)))


def _vqa(d: VqaSetDefinition, path: Path) -> UserEvalSet:
    samples = []
    for where, line in _jsonl(path, QuestionLine):
        image = _image(where, path.parent, line.image, "image")
        samples.append(LazySample(path=image, text=line.question, question=line.question, answer=line.answers[0], answers=tuple(line.answers), where=where))
    return UserEvalSet(d.name, "vqa", path, SampleSequence(samples),
                       content_hash=_hash(d.model_dump_json(), *[(s.path, s.question, s.answers) for s in samples]))


def _captioning(d: CaptioningSetDefinition, path: Path) -> UserEvalSet:
    samples = []
    for where, line in _jsonl(path, ReferenceLine):
        image = _image(where, path.parent, line.image, "image")
        samples.append(LazySample(path=image, text=line.prompt, question=line.prompt, reference=line.reference, where=where))
    return UserEvalSet(d.name, "captioning", path, SampleSequence(samples),
                       content_hash=_hash(d.model_dump_json(), *[(s.path, s.question, s.reference) for s in samples]))
