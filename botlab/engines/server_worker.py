"""Runs inside the workers of a vLLM server that serves rollouts to botlab (the server engine).

Start the server with `--worker-extension-cls botlab.engines.server_worker.WeightPush` (botlab must be importable in
the server's Python). vLLM mixes this class into its worker, and the server engine calls these methods through the
server's `/collective_rpc` endpoint (VLLM_SERVER_DEV_MODE=1), which passes only JSON strings: hence a folder path.
"""

from __future__ import annotations


class WeightPush:
    """Methods vLLM adds to its worker (`self` is the worker: it has `vllm_config`, `model_runner`, `reload_weights`)."""

    def botlab_server_info(self) -> dict:
        """What the learner checks before it trusts the server's logprobs and context length."""
        model_config = self.vllm_config.model_config
        return {
            "logprobs_mode": str(model_config.logprobs_mode),
            "max_model_len": int(model_config.max_model_len),
            "vocab_size": int(model_config.get_vocab_size()),
            "dtype": str(model_config.dtype).removeprefix("torch."),
        }

    def botlab_load_weights(self, weights_path: str) -> None:
        """Reload every weight from the safetensors files in `weights_path` (Hugging Face names), with the model's own
        loader (fused qkv/gate_up, tied embeddings, CPU repacking)."""
        from botlab.engines.vllm_engine import _repack_output_heads

        self.reload_weights(weights_path=weights_path, is_checkpoint_format=True)
        # A head tied to the embeddings is skipped by the reload; on CPU its packed copy would keep the old weights.
        _repack_output_heads(self.model_runner.get_model())
