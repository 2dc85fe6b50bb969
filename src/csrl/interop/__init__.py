"""csrl with other toolkits.

* :mod:`csrl.interop.mteb`: :class:`~csrl.interop.mteb.MTEBEncoder`, any csrl encoder as an MTEB model
  (``pip install mteb``; mteb itself is imported only when MTEB asks for the model's metadata).

Evaluating other toolkits' encoders with csrl's protocol is :func:`csrl.evaluate.encoders.as_encode_fn`
and :func:`csrl.pipelines.evaluate_any.evaluate_encoder`; training on Hugging Face datasets is
:mod:`csrl.data.hf`.
"""

from csrl.interop.mteb import MTEBEncoder, select_prompt

__all__ = ["MTEBEncoder", "select_prompt"]
