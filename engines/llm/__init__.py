"""LLM engines: llama.cpp in-process (``llama_cpp``) or any OpenAI-compatible server (``openai_compatible``).

Only the contract is imported here, so choosing one engine never imports the other's libraries.
"""

from engines.llm.base import ContextTooLongError, LLMEngine, LLMUnavailableError, Message

__all__ = ["ContextTooLongError", "LLMEngine", "LLMUnavailableError", "Message"]
