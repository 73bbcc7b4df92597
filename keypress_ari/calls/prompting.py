"""The router's key press stage: answer, prompt, wait for a digit, match, re-prompt, time out."""

from __future__ import annotations

import time
import uuid

from keypress_ari.calls.base import CallBase
from keypress_ari.calls.decide import (
    ContinueRouting,
    Decision,
    Reprompt,
    RunFlow,
    decide_no_key_press,
    decide_press,
)
from keypress_ari.calls.state import Stage
from keypress_ari.flows.match import Matched
from keypress_ari.flows.model import Router


class PromptStage(CallBase):
    async def start_prompting(self, router: Router) -> None:
        st = self.st
        st.flow_group = router.flow_group
        if not await self.ari("answer", self.ctx.ari.answer(st.channel_id)):
            return
        st.answered = True
        self.ctx.record(st, "answered")
        await self.prompt(router)

    async def prompt(self, router: Router) -> None:
        st = self.st
        st.attempts += 1
        st.dirty = True
        if not router.prompt:
            self._wait_for_press(router.press_1_timeout)
            return
        playback_id = f"kp-{uuid.uuid4().hex}"
        st.prompt_playback_id = playback_id
        st.move(Stage.PROMPTING)
        ok = await self.ari("play", self.ctx.ari.play(st.channel_id, router.prompt,
                                                       playback_id=playback_id))
        if ok:
            self.ctx.record(st, "prompt_started", media=router.prompt, attempt=st.attempts)
        elif st.stage is Stage.PROMPTING:
            st.prompt_playback_id = None
            self._wait_for_press(router.press_1_timeout)

    def _wait_for_press(self, seconds: float) -> None:
        self.st.move(Stage.WAITING)
        self.start_timer(seconds, time.time() + seconds)

    async def prompt_finished(self, state: str) -> None:
        st = self.st
        st.prompt_playback_id = None
        self.ctx.record(st, "prompt_finished", state=state)
        router = self.router()
        if st.stage is Stage.PROMPTING and router is not None:
            self._wait_for_press(router.press_1_timeout)

    async def press_timeout(self) -> None:
        st = self.st
        self.cancel_timer()
        router = self.router()
        self.ctx.record(st, "timeout", seconds=router.press_1_timeout if router else None)
        group = self.group(st.flow_group)
        if group is None:
            await self.route("flow group no longer exists", None)
            return
        await self._carry_out(decide_no_key_press(group, st.data, "no key pressed"))

    async def prompt_digit(self, digit: str, duration_ms: int) -> None:
        """A digit on the caller's leg while the router prompt plays or its timeout runs."""
        st = self.st
        if st.stage is Stage.PROMPTING and st.prompt_playback_id:
            playback_id, st.prompt_playback_id = st.prompt_playback_id, None
            await self.ari("stop prompt", self.ctx.ari.stop_playback(playback_id))
            self.ctx.record(st, "prompt_stopped", reason="key pressed during the prompt")
        self.cancel_timer()
        group = self.group(st.flow_group)
        if group is None:
            self.ctx.record(st, "key_press", digit=digit, duration_ms=duration_ms,
                            attempt=st.attempts, matched=False, reason="flow group missing")
            await self.route("flow group no longer exists", None)
            return
        result, decision = decide_press(group, digit, st.data, st.attempts)
        if isinstance(result, Matched):
            self.ctx.record(st, "key_press", digit=digit, flow=f"{group.name}/{result.label}",
                            duration_ms=duration_ms, attempt=st.attempts, matched=True)
        else:
            self.ctx.record(st, "key_press", digit=digit, duration_ms=duration_ms,
                            attempt=st.attempts, matched=False, reason=result.reason)
        await self._carry_out(decision)

    async def _carry_out(self, decision: Decision) -> None:
        st = self.st
        if isinstance(decision, Reprompt):
            self.ctx.record(st, "reprompt", attempt=decision.attempt,
                            reason=decision.no_match.reason)
            router = self.router()
            if router is not None:
                await self.prompt(router)
            return
        if isinstance(decision, ContinueRouting):
            # Only the no-key-press path continues routing without a flow.
            self.ctx.record(st, "no_key_press", reason=decision.reason)
            await self.route(decision.reason, None)
            return
        await self._run_router_flow(decision)

    async def _run_router_flow(self, decision: RunFlow) -> None:
        st = self.st
        flow = decision.matched.flow
        label = f"{st.flow_group}/{decision.matched.label}"
        if decision.no_key_press:
            self.ctx.record(st, "no_key_press", flow=label, reason=decision.reason)
        await self.apply_flow(flow, label, leg="caller")
        if st.stage in (Stage.PROMPTING, Stage.WAITING):
            # Tokens or call control actions only: the key press stage is over all the same.
            await self.route("flow ends the key press stage", label)
