"""One logging filter that masks card numbers in every log line the product writes.

Whatever logs a card number (our code, the SDK quoting an input, a traceback's message),
the line is rewritten before any handler writes it: a 13-19 digit number, with or without
spaces or dashes, keeps its first six and last four digits (what PCI DSS allows to show).
"""

from __future__ import annotations

import logging
import re

_CARD = re.compile(r"(?<![\d])(?:\d[ -]?){12,18}\d(?![\d])")


def mask_card_numbers(text: str) -> str:
    """``text`` with every card-number-like digit run masked: 424242******4242."""

    def mask(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group())
        return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]

    return _CARD.sub(mask, text)


class CardNumberFilter(logging.Filter):
    """Masks card numbers in a record's message, exception text and stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask_card_numbers(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_card_numbers(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_card_numbers(record.stack_info)
        return True


def install_card_masking(logger: logging.Logger | None = None) -> None:
    """Add the filter to every handler of ``logger`` (the root logger by default).

    On handlers, not loggers: records from child loggers (the SDK's) skip the root logger's
    own filters on their way up, but never its handlers'.
    """
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, CardNumberFilter) for f in handler.filters):
            handler.addFilter(CardNumberFilter())
