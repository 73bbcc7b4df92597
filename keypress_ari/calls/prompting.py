"""The router's key press stage: answer, prompt, wait for a digit, match, re-prompt, time out."""

from __future__ import annotations

import time
import uuid

from keypress_ari.calllog.kinds import EventKind
from keypress_ari.calls.dialing import Dialing
from keypress_ari.calls.flow_runner import FlowRunner
from keypress_ari.calls.rules import (
    ContinueRouting,
    Decision,
    Reprompt,
    RunFlow,
    decide_no_key_press,
    decide_press,
    prompt_group,
)
from keypress_ari.calls.scope import CallScope
from keypress_ari.calls.state import Stage
from keypress_ari.flows.match import Matched
from keypress_ari.flows.model import Router


class Prompting:
    """The router's key press stage of a Stasis call. What it decides is the rules' (a press,
    a timeout); a matched flow is the flow runner's; routing on is the dialing part's."""

    __slots__ = ("_dialing", "_flows", "_scope", "ctx", "st")

    def __init__(self, scope: CallScope, flows: FlowRunner, dialing: Dialing) -> None:
        self._scope, self._flows, self._dialing = scope, flows, dialing
        self.ctx, self.st = scope.ctx, scope.st

    async def start(self, router: Router) -> None:
        st = self.st
        st.flow_group = prompt_group(router).group
        if not await self._scope.request("answer", self.ctx.ari.answer(st.channel_id)):
            return
        st.answered = True
        self.ctx.record(st, EventKind.ANSWERED)
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
        ok = await self._scope.request("play", self.ctx.ari.play(st.channel_id, router.prompt,
                                                       playback_id=playback_id))
        if ok:
            self.ctx.record(st, EventKind.PROMPT_STARTED, media=router.prompt, attempt=st.attempts)
        elif st.stage is Stage.PROMPTING:
            st.prompt_playback_id = None
            self._wait_for_press(router.press_1_timeout)

    def _wait_for_press(self, seconds: float) -> None:
        self.st.move(Stage.WAITING)
        self._scope.timer.start(seconds, time.time() + seconds)

    async def prompt_finished(self, state: str) -> None:
        st = self.st
        st.prompt_playback_id = None
        self.ctx.record(st, EventKind.PROMPT_FINISHED, state=state)
        router = self._scope.router()
        if st.stage is Stage.PROMPTING and router is not None:
            self._wait_for_press(router.press_1_timeout)

    async def timed_out(self) -> None:
        st = self.st
        self._scope.timer.cancel()
        router = self._scope.router()
        self.ctx.record(st, EventKind.TIMEOUT, seconds=router.press_1_timeout if router else None)
        group = self._scope.group(st.flow_group)
        if group is None:
            await self._dialing.continue_routing("flow group no longer exists", None)
            return
        await self._carry_out(decide_no_key_press(group, st.data, "no key pressed"))

    async def digit(self, digit: str, duration_ms: int) -> None:
        """A digit on the caller's leg while the router prompt plays or its timeout runs."""
        st = self.st
        if st.stage is Stage.PROMPTING and st.prompt_playback_id:
            playback_id, st.prompt_playback_id = st.prompt_playback_id, None
            await self._scope.request("stop prompt", self.ctx.ari.stop_playback(playback_id))
            self.ctx.record(st, EventKind.PROMPT_STOPPED, reason="key pressed during the prompt")
        self._scope.timer.cancel()
        group = self._scope.group(st.flow_group)
        if group is None:
            self.ctx.record(st, EventKind.KEY_PRESS, digit=digit, duration_ms=duration_ms,
                            attempt=st.attempts, matched=False, reason="flow group missing")
            await self._dialing.continue_routing("flow group no longer exists", None)
            return
        result, decision = decide_press(group, digit, st.data, st.attempts)
        if isinstance(result, Matched):
            self.ctx.record(st, EventKind.KEY_PRESS, digit=digit,
                            flow=f"{group.name}/{result.label}",
                            duration_ms=duration_ms, attempt=st.attempts, matched=True)
        else:
            self.ctx.record(st, EventKind.KEY_PRESS, digit=digit, duration_ms=duration_ms,
                            attempt=st.attempts, matched=False, reason=result.reason)
        await self._carry_out(decision)

    async def _carry_out(self, decision: Decision) -> None:
        st = self.st
        if isinstance(decision, Reprompt):
            self.ctx.record(st, EventKind.REPROMPT, attempt=decision.attempt,
                            reason=decision.no_match.reason)
            router = self._scope.router()
            if router is not None:
                await self.prompt(router)
            return
        if isinstance(decision, ContinueRouting):
            # Only the no-key-press path continues routing without a flow.
            self.ctx.record(st, EventKind.NO_KEY_PRESS, reason=decision.reason)
            await self._dialing.continue_routing(decision.reason, None)
            return
        await self._run_router_flow(decision)

    async def _run_router_flow(self, decision: RunFlow) -> None:
        st = self.st
        flow = decision.matched.flow
        label = f"{st.flow_group}/{decision.matched.label}"
        if decision.no_key_press:
            self.ctx.record(st, EventKind.NO_KEY_PRESS, flow=label, reason=decision.reason)
        await self._flows.run(flow, label, leg="caller", phase="prompt")
        if st.stage in (Stage.PROMPTING, Stage.WAITING):
            # Tokens or call control actions only: the key press stage is over all the same.
            await self._dialing.continue_routing("flow ends the key press stage", label)
