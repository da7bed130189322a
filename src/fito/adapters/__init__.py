"""fito where people train: adapters for training frameworks. Each module imports its framework only when
it is imported itself (`import fito` or `import fito.adapters` never loads Lightning or transformers).

    fito.adapters.lightning  - Lightning Trainer: strategies that save and restore through fito, and the
                               FitoCheckpoint callback that says when (and makes ckpt_path="last" resolve)
    fito.adapters.hf         - Hugging Face Trainer: FitoTrainer, whose checkpoints commit through fito
    fito.adapters.torchtitan - torchtitan: what to override, documented (not installable beside torch 2.13)"""

__all__: list[str] = []
