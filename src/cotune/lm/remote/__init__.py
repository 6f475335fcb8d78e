"""The client of OpenAI-compatible servers: `openai_compat.OpenAICompatible`, its pooled HTTP, the API key
rules, the runtime LoRA API and the served model's identity."""
