"""Fine-tuning as a service: OpenAI's files and fine-tuning jobs API over tuneforge's pipeline."""
