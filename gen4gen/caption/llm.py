"""Captioners backed by an OpenAI-compatible model.

``llm``: a text model rewrites the layout facts into a natural detailed caption.
``vlm``: a vision model sees the final image (a downscaled data URL, the form LLaVA / Qwen-VL served by
vLLM or Ollama accept) with the layout facts in the prompt, as Gen4Gen recaptioned with LLaVA-1.5.

Every reply is checked against the layout (each concept named with its count, no other concept of
the dataset, a length bound); the client feeds the problems back and retries; a caption that still
fails is replaced by the template caption and the reason is recorded in ``captions.json["fallback"]``.
The short caption stays the template's (it must fit CLIP's 77 tokens); the personalized caption is the
model's caption with modifier tokens when that fits, else the template's.
"""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Annotated, Any, Callable

from PIL import Image
from pydantic import BaseModel, Field

from gen4gen.backends import typed_settings
from gen4gen.caption.check import caption_problems, markup_problem, personalize
from gen4gen.caption.facts import Facts, facts_from_layout
from gen4gen.caption.template import CaptionJob, Outcome, TemplateCaptioner
from gen4gen.words import display_name
from gen4gen.images import read_image
from gen4gen.llm.client import NO_REPLY, LLMClient
from gen4gen.llm.replies import ReplyInvalid, Request, clean_text
from gen4gen.settings import LLMSettings, parse


class CaptionReply(BaseModel):
    caption: str = Field(min_length=1, max_length=4000)


SYSTEM = (
    "You write one caption for an image in a text-to-image training dataset. The facts you are given are "
    "the ground truth about which objects are in the picture and how many of each. Rules: name every object "
    "with its exact count (write the number as a word), using the object names exactly as given (plural when "
    "there are several); never name the objects listed under do_not_mention, and invent no other animals, "
    "people or objects; at most {max_words} words; one or two fluent sentences. "
    'Reply with only a JSON object: {{"caption": "..."}}'
)


class LLMCaptioner(TemplateCaptioner):
    name = "llm"

    @typed_settings
    def __init__(self, llm: Any, *, max_words: Annotated[int, Field(ge=1)], clip_tokenizer: str | None,
                 temperature: Annotated[float, Field(ge=0)], cache_dir: str | None, client: LLMClient | None = None):
        """``llm``: the ``llm`` section; ``cache_dir`` None: its ``cache_dir``; ``client``: one made already."""
        super().__init__(max_words=max_words, clip_tokenizer=clip_tokenizer)
        self.llm = parse(llm, LLMSettings, "llm")  # the backend's ``llm`` node (${llm}), read once
        self.cache_dir, self.temperature = cache_dir, temperature
        self._client = client

    @property
    def client(self) -> LLMClient:
        if self._client is None:
            self._client = LLMClient(self.llm, self.cache_dir)
        return self._client

    def config(self) -> dict:
        # the endpoint and model decide the captions; the cache folder and key variable do not
        return {**super().config(), "model": self.llm.model, "base_url": self.llm.base_url,
                "temperature": self.temperature}

    # ------------------------------------------------------------ prompts
    def facts_message(self, job: CaptionJob, facts: Facts) -> str:
        others = sorted(display_name(c) for c in set(job.known) - set(facts.counts))
        payload = {**facts.as_prompt(), "do_not_mention": others,
                   "reference_caption": self.detailed(facts)}
        return ("Rewrite these layout facts into a natural, detailed caption of the picture.\n"
                + json.dumps(payload, indent=1, ensure_ascii=False))

    def user_content(self, job: CaptionJob, facts: Facts):
        return self.facts_message(job, facts)

    def messages(self, job: CaptionJob, facts: Facts) -> list[dict]:
        return [{"role": "system", "content": SYSTEM.format(max_words=self.max_words)},
                {"role": "user", "content": self.user_content(job, facts)}]

    # ------------------------------------------------------------ running
    def check_for(self, job: CaptionJob, facts: Facts) -> Callable[[CaptionReply], CaptionReply]:
        counts, known = facts.counts, list(job.known)

        def check(reply: CaptionReply) -> CaptionReply:
            text = clean_text(reply.caption, max_len=2000)  # would blank control characters: judged before
            problems = [p for p in [markup_problem(reply.caption)] if p] + \
                caption_problems(text, counts, known, self.max_words)
            if problems:
                raise ReplyInvalid("; ".join(problems))
            return CaptionReply(caption=text)
        return check

    def caption_all(self, jobs: list[CaptionJob], on_done: Callable[[], None] | None = None) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(jobs)
        requests, owners = [], []
        for i, job in enumerate(jobs):
            try:
                facts = facts_from_layout(job.layout, job.background)
                messages = self.messages(job, facts)
            except Exception as e:  # noqa: BLE001 - bad layout or unreadable image: this item fails, others go on
                outcomes[i] = Outcome(None, error=f"cannot caption: {e}")
                if on_done:
                    on_done()
                continue
            requests.append(Request(messages, CaptionReply, temperature=self.temperature,
                                    check=self.check_for(job, facts), tag=job.id))
            owners.append((i, job, facts))
        results = self.client.run(requests, on_done=on_done)
        for (i, job, facts), res in zip(owners, results):
            caps = self.captions(facts, job.tokens)
            meta = {"llm": {"attempts": res.attempts, "cached": res.cached, "usage": res.usage, "errors": res.errors}}
            if res.transport:  # no reply, not a bad one: the template caption stands in until the next run
                meta["redo"] = NO_REPLY
            if res.ok:
                text = res.value.caption
                caps["detailed"] = text
                tokenized = personalize(text, job.tokens)
                if self.counter.fits(tokenized):
                    caps["personalized"] = tokenized
                caps["captioner"] = f"{self.name}:{self.llm.model}"
            else:
                caps["captioner"] = TemplateCaptioner.name
                caps["fallback"] = (f"{self.name} caption rejected after {res.attempts} attempt(s): "
                                    f"{res.errors[-1] if res.errors else 'no reply'}")
            outcomes[i] = Outcome(caps, meta)
        return outcomes


class VLMCaptioner(LLMCaptioner):
    name = "vlm"

    @typed_settings
    def __init__(self, llm: Any, *, max_words: Annotated[int, Field(ge=1)], clip_tokenizer: str | None,
                 temperature: Annotated[float, Field(ge=0)], image_side: Annotated[int, Field(ge=16)],
                 image_format: str, cache_dir: str | None, client: LLMClient | None = None):
        super().__init__(llm, max_words=max_words, clip_tokenizer=clip_tokenizer, temperature=temperature,
                         cache_dir=cache_dir, client=client)
        self.image_side, self.image_format = image_side, image_format.lower()

    def config(self) -> dict:
        return {**super().config(), "image_side": self.image_side, "image_format": self.image_format}

    def user_content(self, job: CaptionJob, facts: Facts) -> list[dict]:
        if job.image_path is None:
            raise ValueError("no image to show the vision model")
        text = ("Describe this picture in a detailed caption: what the objects look like and where they are, "
                "and the background you see. " + self.facts_message(job, facts).split("\n", 1)[1])
        return [{"type": "text", "text": text},
                {"type": "image_url", "image_url": {"url": image_data_url(job.image_path, self.image_side,
                                                                          self.image_format)}}]


def image_data_url(path: Path | str, side: int, fmt: str = "jpeg") -> str:
    """The image, downscaled to ``side`` px on its long edge, as a ``data:`` URL."""
    im = Image.fromarray(read_image(path))
    im.thumbnail((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if fmt == "png":
        im.save(buf, format="PNG")
    else:
        fmt = "jpeg"
        im.save(buf, format="JPEG", quality=90)
    return f"data:image/{fmt};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"
