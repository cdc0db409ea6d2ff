"""sentiment: a real workload, written with the official `ogpu.service` API and run unchanged by
every backend. VADER (vaderSentiment, its lexicon ships inside the package) scores English text:
`analyze` takes one text, `analyze_batch` many; each score has the compound polarity in [-1, 1],
the neg / neu / pos proportions, and a label (positive >= 0.05, negative <= -0.05)."""

from __future__ import annotations

import ogpu.service
from pydantic import BaseModel, Field
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

ANALYZER = SentimentIntensityAnalyzer()  # loads the lexicon once per service, not per task


class TextInput(BaseModel):
    text: str = Field(max_length=20_000)


class BatchInput(BaseModel):
    texts: list[str] = Field(max_length=1_000)


class Score(BaseModel):
    label: str
    compound: float
    neg: float
    neu: float
    pos: float


class BatchOutput(BaseModel):
    scores: list[Score]


def score(text: str) -> Score:
    s = ANALYZER.polarity_scores(text)
    label = "positive" if s["compound"] >= 0.05 else "negative" if s["compound"] <= -0.05 else "neutral"
    return Score(label=label, **s)


@ogpu.service.expose()
def analyze(data: TextInput) -> Score:
    result = score(data.text)
    print(f"analyze: {len(data.text)} chars -> {result.label} ({result.compound:+.3f})", flush=True)
    return result


@ogpu.service.expose()
def analyze_batch(data: BatchInput) -> BatchOutput:
    print(f"analyze_batch: {len(data.texts)} text(s)", flush=True)
    return BatchOutput(scores=[score(t) for t in data.texts])


if __name__ == "__main__":
    ogpu.service.start()
