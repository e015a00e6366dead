"""What generate() returns: vLLM's RequestOutput, CompletionOutput, Logprob, RequestMetrics."""


class Logprob:
    """One entry of a logprobs dict: the log-probability (natural log, from the model's raw
    logits), its rank among the vocabulary (1 = most likely; None where duet does not know it:
    a sampled token outside the top list) and its text."""

    __slots__ = ("logprob", "rank", "decoded_token")

    def __init__(self, logprob, rank=None, decoded_token=None):
        self.logprob = logprob
        self.rank = rank
        self.decoded_token = decoded_token

    def __repr__(self):
        return (f"Logprob(logprob={self.logprob!r}, rank={self.rank!r}, "
                f"decoded_token={self.decoded_token!r})")

    def __eq__(self, other):
        return (isinstance(other, Logprob) and self.logprob == other.logprob
                and self.rank == other.rank and self.decoded_token == other.decoded_token)


class CompletionOutput:
    """One sequence of a request: index, text, token_ids, cumulative_logprob (None unless
    logprobs were asked for), logprobs (a list of {token_id: Logprob} per token, or None),
    finish_reason ("stop", "length", "abort" or None while it runs) and stop_reason (the stop
    string or stop token id that ended it; None for EOS or any other reason)."""

    def __init__(self, index, text, token_ids, cumulative_logprob, logprobs, finish_reason=None,
                 stop_reason=None):
        self.index = index
        self.text = text
        self.token_ids = token_ids
        self.cumulative_logprob = cumulative_logprob
        self.logprobs = logprobs
        self.finish_reason = finish_reason
        self.stop_reason = stop_reason
        self.lora_request = None

    def finished(self):
        return self.finish_reason is not None

    def __repr__(self):
        return (f"CompletionOutput(index={self.index}, text={self.text!r}, "
                f"token_ids={self.token_ids}, cumulative_logprob={self.cumulative_logprob}, "
                f"logprobs={self.logprobs}, finish_reason={self.finish_reason}, "
                f"stop_reason={self.stop_reason})")


class RequestMetrics:
    """Times (time.time() seconds) and the request's speculative-decoding counters:
    num_drafts (verifications of its proposals), num_draft_tokens (proposed),
    num_accepted_tokens, spec_token_acceptance_counts (vLLM's: [num_drafts, accepted at
    lookahead 1, 2, ...]) and num_preemptions."""

    def __init__(self, arrival_time):
        self.arrival_time = arrival_time
        self.last_token_time = arrival_time
        self.first_scheduled_time = None
        self.first_token_time = None
        self.time_in_queue = None
        self.finished_time = None
        self.scheduler_time = None
        self.model_forward_time = None
        self.model_execute_time = None
        self.num_drafts = 0
        self.num_draft_tokens = 0
        self.num_accepted_tokens = 0
        self.spec_token_acceptance_counts = None
        self.num_preemptions = 0

    @property
    def acceptance_rate(self):
        """num_accepted_tokens / num_draft_tokens, or None before any proposal."""
        if not self.num_draft_tokens:
            return None
        return self.num_accepted_tokens / self.num_draft_tokens

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"RequestMetrics({fields})"


class RequestOutput:
    """The output of one request: request_id, prompt (its text, None for token-id prompts),
    prompt_token_ids, prompt_logprobs (None, or a list with None first and then
    {token_id: Logprob} per prompt token), outputs (its n CompletionOutputs), finished and
    metrics."""

    def __init__(self, request_id, prompt, prompt_token_ids, prompt_logprobs, outputs, finished,
                 metrics):
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = prompt_token_ids
        self.prompt_logprobs = prompt_logprobs
        self.outputs = outputs
        self.finished = finished
        self.metrics = metrics
        self.lora_request = None
        self.encoder_prompt = None
        self.encoder_prompt_token_ids = None
        self.num_cached_tokens = None

    def __repr__(self):
        return (f"RequestOutput(request_id={self.request_id}, prompt={self.prompt!r}, "
                f"prompt_token_ids={self.prompt_token_ids}, "
                f"prompt_logprobs={self.prompt_logprobs}, outputs={self.outputs}, "
                f"finished={self.finished}, metrics={self.metrics})")
