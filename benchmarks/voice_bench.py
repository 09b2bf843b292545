"""Voice loop benchmark: pipeline overhead, barge-in stop latency, offline stack streamed vs naive.

    python benchmarks/voice_bench.py            # table
    python benchmarks/voice_bench.py --json     # one JSON object (keys below)

1. **Overhead** (``overhead_ms``): providers simulated at published latencies — STT final 150 ms after the end
   of speech, LLM first token 250 ms after the request, TTS first audio 75 ms after its first text (a TTS that
   takes streamed text, like ElevenLabs' WebSocket). The input (noise bursts heard by an energy VAD, so the
   true end of speech is known to the sample) is fed in real time; per turn, overhead = (first audio out -
   true end of speech) - 475 ms. p50 and p95 over the turns.
2. **Barge-in** (``barge_in_stop_p95_ms``): in the same session every next utterance starts while the agent
   is still talking (and its LLM still streaming): time from the VAD confirming speech to the speaker going
   quiet, and to the LLM stream being closed.
3. **Offline stack** (``offline_voice_to_voice_p50_ms``): silero + whisper tiny.en + offline:smollm2 + Piper
   (or flite) on >= 20 turns of real speech (pytest-audioeval clips and Debian's LibriVox utterances,
   reused in rounds), in real time, with per-stage p50/p95 — side by side with the same components called
   naively: wait for the end of the turn, transcribe the whole utterance, generate the whole reply,
   synthesize all of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.pipelines.voice.clips

from polymodal.backends.base import BaseChatModel, Completion, Delta, GenerateOptions, OutputSchema
from polymodal.backends.messages import Message
from polymodal.backends.speech import TTSChunk, TTSOptions
from polymodal.media.audio import Audio
from polymodal.pipelines.voice.fakes import EnergyVAD, ScriptedSTT
from polymodal.pipelines.voice.loop import VoiceLoopConfig
from polymodal.pipelines.voice.session import (
    Conversation,
    Turn,
    VoiceSession,
    percentile,
    stage_latencies,
    summarize,
)
from polymodal.pipelines.voice.simulate import simulate
from polymodal.pipelines.voice.turns import TurnTakingConfig

RATE = 16000
STT_FINAL_S, LLM_FIRST_S, TTS_FIRST_S = 0.150, 0.250, 0.075
REPLY = " ".join(["Sure, here is a longer answer that keeps going for a while so you can interrupt it."] * 3)


class SimulatedLLM(BaseChatModel):
    """First token ``first_token_s`` after the request, then a word every ``word_s``."""

    provider = "simulated"

    def __init__(self, reply: str, first_token_s: float, word_s: float) -> None:
        super().__init__("llm")
        self.reply, self.first_token_s, self.word_s = reply, first_token_s, word_s

    async def _generate(
        self, messages: Sequence[Message], schema: OutputSchema | None, options: GenerateOptions
    ) -> Completion:
        await asyncio.sleep(self.first_token_s)
        return Completion(self.reply)

    async def _stream(self, messages: Sequence[Message], options: GenerateOptions) -> AsyncIterator[Delta]:
        await asyncio.sleep(self.first_token_s)
        for i, word in enumerate(self.reply.split(" ")):
            if i:
                await asyncio.sleep(self.word_s)
            yield Delta(word if i == 0 else " " + word)


class SimulatedStreamingTTS:
    """Takes streamed text; first audio ``first_audio_s`` after the first text; 60 ms of tone per char."""

    provider, model, sample_rate = "simulated", "tts", RATE

    def __init__(self, first_audio_s: float) -> None:
        self.first_audio_s = first_audio_s

    async def stream(
        self, text: AsyncIterable[str], options: TTSOptions | None = None
    ) -> AsyncIterator[TTSChunk]:
        first = True
        async for piece in text:
            if first:
                await asyncio.sleep(self.first_audio_s)
                first = False
            n = max(1, round(len(piece) * 0.06 * RATE))
            pcm = (0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / RATE)).astype(np.float32)
            yield TTSChunk(pcm=pcm, sample_rate=RATE, text=piece)

    async def synthesize(self, text: str, options: TTSOptions | None = None) -> Audio:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


def bursts(turns: int, speech_s: float, gap_s: float) -> tuple[Audio, list[float]]:
    """Noise bursts (the 'utterances') separated by silence; returns the audio and each burst's true end."""
    rng = np.random.default_rng(0)
    pieces, ends, t = [Audio.silence(0.3, RATE)], [], 0.3
    for _ in range(turns):
        pieces.append(Audio((0.2 * rng.standard_normal(round(speech_s * RATE))).astype(np.float32), RATE))
        t += speech_s
        ends.append(t)
        pieces.append(Audio.silence(gap_s, RATE))
        t += gap_s
    return Audio.concatenate(pieces), ends


async def simulated_providers(turns: int) -> dict[str, Any]:
    """Parts 1 and 2: one real-time session in which every utterance also interrupts the previous reply."""
    audio, ends = bursts(turns + 1, speech_s=0.5, gap_s=1.6)
    config = VoiceLoopConfig(
        turn_taking=TurnTakingConfig(pause_s=0.096, end_of_turn_s=0.096, min_turn_speech_s=0.2),
        system_prompt=None,
    )
    session = VoiceSession(conversation=Conversation(None))

    def final_due(called: float) -> float:  # 150 ms after the true end of the utterance being finalized
        now = session.clock.now()
        last_end = max(e for e in ends if e <= now + 1e-3)
        return called + (last_end + STT_FINAL_S - now)

    result = await simulate(
        audio,
        vad=EnergyVAD(),
        stt=ScriptedSTT(default="tell me something", final_at=final_due),
        llm=SimulatedLLM(REPLY, LLM_FIRST_S, word_s=0.04),
        tts=SimulatedStreamingTTS(TTS_FIRST_S),
        config=config,
        session=session,
    )
    budget = STT_FINAL_S + LLM_FIRST_S + TTS_FIRST_S
    overheads, stops, llm_stops, stages = [], [], [], []
    for turn, end in zip(result.turns, ends, strict=False):
        if turn.audio_out_first is None:
            continue
        overheads.append(1000 * (turn.audio_out_first - end - budget))
        stages.append(turn)
        if turn.interrupted and turn.playback_stopped is not None and turn.barge_in_detected is not None:
            stops.append(1000 * (turn.playback_stopped - turn.barge_in_detected))
            if turn.llm_stopped is not None:
                llm_stops.append(1000 * (turn.llm_stopped - turn.barge_in_detected))
    return {
        "turns": len(overheads),
        "overhead_ms_p50": round(percentile(overheads, 50), 1),
        "overhead_ms_p95": round(percentile(overheads, 95), 1),
        "barge_ins": len(stops),
        "barge_in_stop_ms_p50": round(percentile(stops, 50), 2),
        "barge_in_stop_ms_p95": round(percentile(stops, 95), 2),
        "llm_stop_ms_p95": round(percentile(llm_stops, 95), 2) if llm_stops else None,
        "llm_stops": len(llm_stops),
        "stages": summarize(stages),
    }


def real_clips(turns: int) -> list[tuple[Path, str]]:
    from tests.pipelines.voice.clips import real_speech

    clips = [(c.path, c.text) for c in real_speech()]
    if not clips:
        raise SystemExit(
            "no real speech installed (pip install pytest-audioeval; apt-get install pocketsphinx-testdata)"
        )
    return [clips[i % len(clips)] for i in range(turns)]


async def offline_stack(turns: int, tts_name: str, llm_id: str, max_tokens: int) -> dict[str, Any]:
    """Part 3: the offline stack streamed (real time) and naive (sequential, whole-utterance calls)."""
    from tests.pipelines.voice.clips import word_error_rate

    from polymodal.pipelines.voice.stack import make_llm, make_stt, make_tts, make_vad

    t0 = time.perf_counter()
    stt, tts, llm = make_stt("whisper"), make_tts(tts_name), make_llm(llm_id)
    options = GenerateOptions(max_tokens=max_tokens, temperature=0.0)
    config = VoiceLoopConfig(generate=options)
    # warm-up: the first LLM call loads (and the very first ever converts) the model
    await llm.generate([Message.user("Hi")], options=GenerateOptions(max_tokens=2))
    await stt.transcribe(Audio.silence(1.0, RATE))
    await tts.synthesize("Warm up.")
    load_s = time.perf_counter() - t0

    streamed: list[Turn] = []
    wers: list[float] = []
    for path, text in real_clips(turns):
        result = await simulate(
            Audio.from_path(path), vad=make_vad("silero"), stt=stt, llm=llm, tts=tts, config=config
        )
        for turn in result.turns[:1]:
            streamed.append(turn)
            wers.append(word_error_rate(text, turn.user_text))

    naive: list[dict[str, float]] = []
    end_of_turn = config.turn_taking.end_of_turn_s
    for path, _ in real_clips(turns):
        clip = Audio.from_path(path, sample_rate=RATE)
        a = time.perf_counter()
        heard = await stt.transcribe(clip)
        b = time.perf_counter()
        messages = [*Conversation(config.system_prompt).messages(), Message.user(heard.text or "hello")]
        reply = await llm.generate(messages, options=options)
        c = time.perf_counter()
        await tts.synthesize(reply.text or "Okay.")
        d = time.perf_counter()
        naive.append(
            {
                "stt_final": b - a,
                "llm_full": c - b,
                "tts_full": d - c,
                "voice_to_voice": end_of_turn + (d - a),
            }
        )

    def p(values: list[float], q: float) -> float:
        return round(1000 * percentile(values, q), 1)

    naive_summary = {
        key: {
            "n": len(naive),
            "p50_ms": p([n[key] for n in naive], 50),
            "p95_ms": p([n[key] for n in naive], 95),
        }
        for key in naive[0]
    }
    summary = summarize(streamed)
    return {
        "turns": len(streamed),
        "tts": tts.provider,
        "llm": llm_id,
        "load_s": round(load_s, 1),
        "stt_wer_mean": round(float(np.mean(wers)), 3),
        "streamed": summary,
        "naive": naive_summary,
        "replies_interrupted": sum(t.interrupted for t in streamed),
        "sample_turns": [
            {
                "user_text": t.user_text,
                "reply_text": t.reply_text,
                **{k: round(v, 3) for k, v in stage_latencies(t).items() if v is not None},
            }
            for t in streamed[:3]
        ],
    }


def table(rows: list[tuple[str, Any, Any]], head: tuple[str, str, str]) -> str:
    lines = [f"{head[0]:<22}{head[1]:>14}{head[2]:>14}"]
    lines += [f"{name:<22}{a!s:>14}{b!s:>14}" for name, a, b in rows]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}}
    sim = await simulated_providers(args.sim_turns)
    out["simulated_providers"] = sim
    out["overhead_ms"] = sim["overhead_ms_p50"]
    out["barge_in_stop_p95_ms"] = sim["barge_in_stop_ms_p95"]
    if not args.skip_offline:
        offline = await offline_stack(args.turns, args.tts, args.llm, args.max_tokens)
        out["offline"] = offline
        out["offline_voice_to_voice_p50_ms"] = offline["streamed"]["voice_to_voice"]["p50_ms"]
        out["naive_voice_to_voice_p50_ms"] = offline["naive"]["voice_to_voice"]["p50_ms"]
    out["machine"]["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    return out


def print_report(out: dict[str, Any]) -> None:
    sim = out["simulated_providers"]
    print(f"machine: {out['machine']}")
    print(
        f"\nsimulated providers (STT {STT_FINAL_S * 1000:.0f} ms, LLM {LLM_FIRST_S * 1000:.0f} ms, "
        f"TTS {TTS_FIRST_S * 1000:.0f} ms), {sim['turns']} turns"
    )
    print(
        table(
            [
                ("overhead (ms)", sim["overhead_ms_p50"], sim["overhead_ms_p95"]),
                ("barge-in stop (ms)", sim["barge_in_stop_ms_p50"], sim["barge_in_stop_ms_p95"]),
                ("llm stop p95 (ms)", "", sim["llm_stop_ms_p95"]),
            ],
            ("", "p50", "p95"),
        )
    )
    if "offline" in out:
        off = out["offline"]
        print(
            f"\noffline stack ({off['turns']} turns, whisper tiny.en + {off['llm']} + {off['tts']}; "
            f"STT WER {off['stt_wer_mean']})"
        )
        rows = []
        for stage, row in off["streamed"].items():
            rows.append((f"streamed {stage}", row["p50_ms"], row["p95_ms"]))
        for stage, row in off["naive"].items():
            rows.append((f"naive {stage}", row["p50_ms"], row["p95_ms"]))
        print(table(rows, ("stage (ms)", "p50", "p95")))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--turns", type=int, default=20, help="offline turns of real speech (>= 20)")
    parser.add_argument("--sim-turns", type=int, default=20, help="turns with simulated providers")
    parser.add_argument("--tts", default="auto", help="auto, piper or flite")
    parser.add_argument("--llm", default="offline:smollm2")
    parser.add_argument("--max-tokens", type=int, default=40)
    parser.add_argument("--skip-offline", action="store_true", help="only the simulated-provider parts")
    arguments = parser.parse_args()
    result = asyncio.run(main(arguments))
    if arguments.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
