"""What both training examples train on, written once: the candidate prompt templates, the
arithmetic questions, the model that stands in for an LLM on a machine without a GPU, and
the reward. Plain Python, no dependency: `train.py` (agentlightning 0.3.0, Python 3.11+)
and `train_v1.py` with its agent and stand-in server (agentlightning 1.0, Python 3.12)
import it from this folder.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List

# The resource being trained: which of these makes the model answer correctly.
CANDIDATES = [
    "Q: {question}\nA:",
    "Answer in one word: {question}",
    "Show your work step by step, then give the result of {question}.",
]

TRAIN: List[Dict[str, Any]] = [
    {"question": f"{a} + {b}", "answer": a + b} for a, b in [(2, 3), (7, 5), (11, 30), (4, 4)]
]
VAL: List[Dict[str, Any]] = [{"question": f"{a} + {b}", "answer": a + b} for a, b in [(9, 9), (21, 1)]]


def model(prompt: str) -> str:
    """A stand-in for an LLM: it only works the sum out when the prompt asks for its work;
    otherwise it guesses the first number it sees."""
    numbers = [int(n) for n in re.findall(r"-?\d+", prompt)]
    if "step by step" in prompt and len(numbers) >= 2:
        return f"{numbers[0]} + {numbers[1]} = {numbers[0] + numbers[1]}"
    return str(numbers[0]) if numbers else "?"


def reward(answer: str, expected: int) -> float:
    """1 when the last number the model said is the expected result, else 0."""
    said = re.findall(r"-?\d+", answer)
    return 1.0 if said and int(said[-1]) == expected else 0.0
