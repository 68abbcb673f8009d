"""Checks shared by the Lightning modules of all models: checkpoints that do not fit, unreadable files, NaN scores.

:class:`CheckedModuleMixin` is mixed into an ``AnomalibModule`` subclass before it. It

- records the model class in every checkpoint it saves (``anomalib_medical_model_class``: a plain string, so the
  checkpoint still loads with ``weights_only=True``);
- turns a state dict that does not fit (a checkpoint of another model, of other constructor arguments, or
  ``anomalib test --ckpt_path`` without the training configuration) into one ``ValueError`` that names the class
  the checkpoint was written by, the constructor arguments that differ and a few of the keys, instead of torch's
  list of every key. Both loading paths end in :meth:`~CheckedModuleMixin.load_state_dict`:
  ``load_from_checkpoint`` and Lightning's ``ckpt_path`` restore (``on_load_checkpoint`` runs first in both and
  gives the checkpoint's hyper-parameters);
- names an empty, truncated or non-PyTorch checkpoint file. ``load_from_checkpoint`` raises a ``ValueError``
  before reading it. A ``ckpt_path`` of the Trainer (``anomalib test --ckpt_path``) is read by Lightning's
  checkpoint IO before any hook of the model runs, so its error (torch's bare ``EOFError`` for an empty file)
  cannot be replaced there: :class:`CheckpointFileNote` adds a note naming the file and the problem to it, which
  Python prints under the traceback;
- refuses non-finite image scores in validation, test and predict steps: anomalib's post-processor labels a NaN
  score *normal* (``NaN >= threshold`` is false), so a ``ValueError`` names the images instead. The exported
  graph carries no such check: a deployment that may see NaN pixels must test its inputs.
"""

import zipfile
from pathlib import Path
from typing import Any

import torch
from anomalib.data import Batch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.types import STEP_OUTPUT

CHECKPOINT_CLASS_KEY = "anomalib_medical_model_class"
_SHOWN = 3  # keys or images shown in an error message
_ARGUMENTS = 8  # differing constructor arguments shown


def unreadable_checkpoint(path: str | Path) -> str | None:
    """Say why a local checkpoint file cannot be a PyTorch checkpoint (empty, truncated zip, other format).

    Args:
        path: Checkpoint path; a remote URL or a missing file is not judged (``None``).

    Returns:
        The reason, naming the file, or ``None`` when nothing is wrong with it as far as a cheap look tells.

    """
    path = Path(path)
    if not path.is_file():
        return None
    size = path.stat().st_size
    if size == 0:
        return f"The checkpoint file {path} is empty (0 bytes)"
    with path.open("rb") as file:
        head = file.read(4)
    if head == b"PK\x03\x04":  # torch.save's zip format
        if zipfile.is_zipfile(path):
            return None
        return f"The checkpoint file {path} is truncated or damaged ({size} bytes, no complete zip archive)"
    if head.startswith(b"\x80"):  # a pickle: torch's legacy format
        return None
    return f"The file {path} is not a PyTorch checkpoint (it starts with {head!r})"


class CheckpointFileNote(Callback):
    """Add a note naming the checkpoint file to an exception raised while the Trainer's ``ckpt_path`` is unreadable."""

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Note the reason :func:`unreadable_checkpoint` gives for ``trainer.ckpt_path``, if any."""
        del pl_module
        reason = unreadable_checkpoint(trainer.ckpt_path) if trainer.ckpt_path else None
        if reason:
            exception.add_note(f"{reason}: save the checkpoint again or pass another --ckpt_path.")


def _plain(value: Any) -> Any:
    """Hyper-parameter value comparable across checkpoint and constructor (tuples as lists, paths as strings)."""
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return str(value) if isinstance(value, Path) else value


def _shown(hyper_parameters: dict[str, Any], key: str) -> str:
    return repr(hyper_parameters[key]) if key in hyper_parameters else "absent"


def _examples(items: list[str], separator: str = ", ") -> str:
    shown = separator.join(items[:_SHOWN])
    return f"{shown}{separator}..." if len(items) > _SHOWN else shown


class CheckedModuleMixin:
    """Checkpoint and score checks of an ``AnomalibModule`` (see the module docstring); mix in before it."""

    model: torch.nn.Module
    hparams: Any

    def configure_callbacks(self) -> list[Callback]:
        """Return the callbacks of ``AnomalibModule`` and a :class:`CheckpointFileNote`."""
        return [*super().configure_callbacks(), CheckpointFileNote()]

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | Path, *args: Any, **kwargs: Any) -> Any:
        """Load as ``AnomalibModule`` does; an empty, truncated or non-PyTorch file is refused by name first.

        Raises:
            ValueError: If :func:`unreadable_checkpoint` finds the file unusable.

        """
        reason = unreadable_checkpoint(checkpoint_path)
        if reason:
            msg = f"{reason}: save the checkpoint again or load another one."
            raise ValueError(msg)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the model class next to anomalib's entries."""
        super().on_save_checkpoint(checkpoint)
        checkpoint[CHECKPOINT_CLASS_KEY] = f"{type(self).__module__}.{type(self).__qualname__}"

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the checkpoint's class and hyper-parameters for the message of a state dict that does not fit."""
        hyper_parameters = dict(checkpoint.get("hyper_parameters") or {})
        written_by = checkpoint.get(CHECKPOINT_CLASS_KEY) or hyper_parameters.get("_class_path")
        self._checkpoint_origin = (written_by, hyper_parameters)
        super().on_load_checkpoint(checkpoint)

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load a state dict; one that does not fit raises a short ``ValueError`` (see the module docstring).

        Raises:
            ValueError: If torch refuses the state dict (missing or unexpected keys, other shapes).

        """
        origin, self._checkpoint_origin = getattr(self, "_checkpoint_origin", None), None
        try:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        except RuntimeError:
            # torch's message lists every key: ``from None`` keeps it out of the traceback
            raise ValueError(self._state_dict_mismatch(state_dict, origin)) from None

    def _state_dict_mismatch(self, state_dict: dict[str, Any], origin: tuple[str | None, dict] | None) -> str:
        name = type(self).__name__
        parts = [f"The checkpoint does not fit this {name} model."]
        if origin is not None:
            written_by, saved = origin
            current = {key: value for key, value in dict(self.hparams).items() if not key.startswith("_")}
            saved = {key: value for key, value in saved.items() if not key.startswith("_")}
            short = written_by.rsplit(".", 1)[-1] if written_by else None
            if written_by is None:
                parts.append("It names no model class (saved before anomalib-medical recorded it).")
            elif short != name:
                parts.append(
                    f"It was written by {short} ({written_by}): load it as that model (--model {short} or "
                    f"{short}.load_from_checkpoint)."
                )
            else:
                parts.append(f"It was written by {written_by}.")
            differing = [
                f"{key}={_shown(saved, key)} in the checkpoint, {_shown(current, key)} here"
                for key in dict.fromkeys([*saved, *current])
                if key not in saved or key not in current or _plain(saved[key]) != _plain(current[key])
            ]
            if differing:
                more = f"; and {len(differing) - _ARGUMENTS} more" if len(differing) > _ARGUMENTS else ""
                parts.append(f"Constructor arguments that differ: {'; '.join(differing[:_ARGUMENTS])}{more}.")
            else:
                parts.append("The constructor arguments are the same: the checkpoint may come from another version.")
        parts.append(
            "Build the model with the arguments it was trained with: pass the training configuration "
            "(anomalib test --config <training config.yaml> --ckpt_path ...) or the same arguments."
        )
        own = self.state_dict()
        missing_keys = [key for key in own if key not in state_dict]
        unexpected = [key for key in state_dict if key not in own]
        reshaped = [
            f"{key}: {tuple(state_dict[key].shape)} in the checkpoint, {tuple(own[key].shape)} here"
            for key in own
            if key in state_dict
            and isinstance(state_dict[key], torch.Tensor)
            and state_dict[key].shape != own[key].shape
        ]
        found = [
            f"{len(items)} {label} (e.g. {_examples(items, separator)})"
            for label, items, separator in (
                ("missing keys", missing_keys, ", "),
                ("unexpected keys", unexpected, ", "),
                ("keys of another shape", reshaped, "; "),
            )
            if items
        ]
        if found:
            parts.append(f"State dict: {'. '.join(found)}.")
        return " ".join(parts)

    def check_finite_scores(self, batch: Batch) -> None:
        """Raise if an image score of ``batch`` is NaN or infinite (anomalib would label a NaN score normal).

        Raises:
            ValueError: Naming the images (their paths where the batch has them) and whether their pixels or the
                model's weights are non-finite.

        """
        scores = batch.pred_score
        if scores is None or bool(torch.isfinite(scores).all()):
            return
        bad = (~torch.isfinite(scores.reshape(len(scores), -1)).all(dim=1)).nonzero().flatten().tolist()
        paths = batch.image_path
        names = [str(paths[index]) if paths else f"item {index} of the batch" for index in bad]
        shown = ", ".join(names[:_SHOWN]) + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")
        causes = []
        pixels = [name for name, index in zip(names, bad, strict=True) if not torch.isfinite(batch.image[index]).all()]
        if pixels:
            causes.append(f"non-finite pixels in {_examples(pixels)}")
        if any(
            value.is_floating_point() and not bool(torch.isfinite(value).all())
            for value in self.model.state_dict().values()
        ):
            causes.append("non-finite weights or buffers in the model (a diverged training or a damaged checkpoint)")
        cause = "; ".join(causes) if causes else "no non-finite pixel or weight found (an overflow in the model?)"
        msg = (
            f"Non-finite anomaly scores for {len(bad)} of {len(scores)} images: {shown}. anomalib would label them "
            f"normal, so they are refused. Cause: {cause}."
        )
        raise ValueError(msg)

    def test_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Test step of ``AnomalibModule``, refusing non-finite scores (:meth:`check_finite_scores`)."""
        output = super().test_step(batch, *args, **kwargs)
        self.check_finite_scores(output)
        return output

    def predict_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Predict step of ``AnomalibModule``, refusing non-finite scores (:meth:`check_finite_scores`)."""
        output = super().predict_step(batch, *args, **kwargs)
        self.check_finite_scores(output)
        return output
