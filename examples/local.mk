# Example configurations (docs/configuration.md explains every key).
EXTRA_DIST += examples/mock.cfg examples/mock-speculative.cfg examples/cpu-only.cfg \
	examples/gpu-target-cpu-draft.cfg \
	examples/cpu-llama-160m-speculative.cfg
