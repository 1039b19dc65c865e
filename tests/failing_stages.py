"""A user-supplied stage that breaks mid-stream (`--denoiser failing_stages:broken_denoiser`),
to check that a failing stage stops the whole chain cleanly."""

import os
import time

import numpy as np

from asr_stream.denoisers.passthrough import Passthrough


class BrokenDenoiser(Passthrough):
    name = "broken"

    def __init__(self, fail_after_hops: int = 200):
        super().__init__()
        self.left = fail_after_hops
        self.failed_at: float | None = None

    def process(self, hop):
        self.left -= 1
        if self.left < 0:
            self.failed_at = time.monotonic()
            stamp = os.environ.get("BROKEN_STAGE_STAMP")
            if stamp:
                with open(stamp, "w") as f:
                    f.write(repr(time.time()))
            raise RuntimeError("simulated denoiser failure")
        return hop


def broken_denoiser(**options):
    return BrokenDenoiser()


POISON = 12345 / 32768  # a sample value a test client sends on purpose (as s16le: exactly 12345)


class PoisonedDenoiser(Passthrough):
    """Fails only on a stream that carries a run of the POISON value: one daemon session breaks
    while the others, through the same engine, go on."""

    name = "poisoned"

    def process(self, hop):
        if int((np.asarray(hop) == np.float32(POISON)).sum()) >= 160:
            raise RuntimeError("simulated denoiser failure on poisoned audio")
        return hop


def poisoned_denoiser(**options):
    return PoisonedDenoiser()


class SlowDenoiser(Passthrough):
    """Takes twice as long as the audio it is given (a user's model too heavy for the box): a live
    session through it falls further behind every second."""

    name = "slow"

    def process(self, hop):
        time.sleep(2.0 * len(hop) / 16000)
        return hop


def slow_denoiser(**options):
    return SlowDenoiser()
