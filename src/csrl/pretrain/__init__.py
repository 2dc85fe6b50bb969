"""Masked-language-model pretraining (``csrl pretrain``): BERT-style MLM from scratch or continued from a
checkpoint, with the trainer's machinery (checked config, precision, torchrun, resumable checkpoints, run
lock, metrics, geometry probe). ``config`` (PretrainConfig), ``data`` (corpus -> sequences), ``masking``
(masked batches), ``model`` (the masked LM, its loss on masked positions, the saved folder), ``folder`` (the
run folder's checks), ``setup`` and ``loop`` (the run)."""
