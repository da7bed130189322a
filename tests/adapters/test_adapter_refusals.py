"""What the adapters refuse, and that a framework's resume through fito is verified before it touches anything
(in-process, one device: seconds)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fito


def flip_a_payload_byte(root: Path) -> Path:
    obj = max(root.glob("epochs/*/*/rank-*.fito"), key=lambda p: p.stat().st_mtime)
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0x01
    obj.write_bytes(bytes(data))
    return obj


def test_lightning_resume_from_a_damaged_step_fails_and_leaves_the_model_untouched(tmp_path: Path) -> None:
    L = pytest.importorskip("lightning.pytorch")
    from fito.adapters.lightning import FitoCheckpoint, FitoSingleDeviceStrategy

    class M(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 1)

        def training_step(self, batch, i):  # type: ignore[no-untyped-def]
            return self.net(batch[0]).pow(2).mean()

        def configure_optimizers(self):  # type: ignore[no-untyped-def]
            return torch.optim.AdamW(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 4)), batch_size=4)

    def trainer(epochs: int) -> object:
        return L.Trainer(accelerator="cpu", devices=1, strategy=FitoSingleDeviceStrategy(device="cpu"),
                         max_epochs=epochs, callbacks=[FitoCheckpoint(tmp_path, every_n_epochs=1)], logger=False,
                         enable_progress_bar=False, enable_model_summary=False)

    trainer(1).fit(M(), data)
    flip_a_payload_byte(tmp_path)
    fresh = M()
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(fito.FitoError) as err:
        trainer(2).fit(fresh, data, ckpt_path="last")
    assert "rank-00000.fito" in str(err.value)  # names the damaged object
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())


def test_lightning_refuses_a_non_fito_strategy_and_a_missing_schedule(tmp_path: Path) -> None:
    L = pytest.importorskip("lightning.pytorch")
    from fito.adapters.lightning import FitoCheckpoint

    with pytest.raises(ValueError, match="every_n_train_steps or every_n_epochs"):
        FitoCheckpoint(tmp_path)
    cb = FitoCheckpoint(tmp_path, every_n_epochs=1)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, callbacks=[cb], logger=False,
                        enable_progress_bar=False)
    with pytest.raises(TypeError, match="needs a fito strategy"):
        cb.setup(trainer, None, "fit")  # type: ignore[arg-type]


def test_hf_refuses_best_model_tracking(tmp_path: Path) -> None:
    pytest.importorskip("accelerate")
    from transformers import GPT2Config, GPT2LMHeadModel, TrainingArguments
    from fito.adapters.hf import FitoTrainer

    model = GPT2LMHeadModel(GPT2Config(vocab_size=16, n_positions=8, n_embd=8, n_layer=1, n_head=1))
    args = TrainingArguments(str(tmp_path), use_cpu=True, report_to=[], load_best_model_at_end=True,
                             eval_strategy="steps", save_strategy="steps")
    with pytest.raises(ValueError, match="load_best_model_at_end"):
        FitoTrainer(model=model, args=args)
