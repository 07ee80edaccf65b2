"""The InstructGPT pipeline and GPT-1 fine-tuning on the generic loop: data, sft, classify, reward, dpo."""
