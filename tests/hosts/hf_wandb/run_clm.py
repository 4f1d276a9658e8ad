"""Train a tiny causal LM on synthetic sequences with the Hugging Face Trainer.

    python run_clm.py --output_dir out --learning_rate 1e-3
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser, Trainer, TrainingArguments, set_seed

from tinylm.data import PATTERNS, build_datasets
from tinylm.model import build_model

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    n_layer: int = field(default=1, metadata={"help": "Number of transformer blocks."})
    n_embd: int = field(default=32, metadata={"help": "Hidden size."})
    n_head: int = field(default=2, metadata={"help": "Attention heads."})
    vocab_size: int = field(default=64, metadata={"help": "Vocabulary size."})


@dataclass
class DataArguments:
    pattern: str = field(default="arithmetic", metadata={"help": f"Sequence family: {', '.join(PATTERNS)}."})
    seq_len: int = field(default=32, metadata={"help": "Tokens per sequence."})
    num_train_sequences: int = field(default=2048)
    num_eval_sequences: int = field(default=256)
    noise: float = field(default=0.05, metadata={"help": "Fraction of tokens replaced at random."})


def main() -> None:
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    parser.set_defaults(
        output_dir="out",
        learning_rate=1e-3,
        max_steps=150,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=128,
        eval_strategy="steps",
        eval_steps=50,
        save_strategy="steps",
        save_steps=50,
        save_total_limit=2,
        logging_steps=25,
        report_to=["wandb"],
        use_cpu=True,
    )
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(sys.argv[1])
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses()

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    torch.set_num_threads(1)
    set_seed(training_args.seed)

    train_dataset, eval_dataset = build_datasets(
        data_args.pattern,
        data_args.num_train_sequences,
        data_args.num_eval_sequences,
        data_args.seq_len,
        model_args.vocab_size,
        data_args.noise,
        seed=training_args.seed,
    )
    model = build_model(model_args.vocab_size, data_args.seq_len, model_args.n_embd, model_args.n_layer, model_args.n_head)
    logger.info("model has %d parameters", sum(p.numel() for p in model.parameters()))

    trainer = Trainer(model=model, args=training_args, train_dataset=train_dataset, eval_dataset=eval_dataset)
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()
    trainer.log_metrics("train", train_result.metrics)

    metrics = trainer.evaluate()
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)


if __name__ == "__main__":
    main()
