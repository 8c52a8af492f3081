"""Data formats: FlashRAG QA jsonl, Search-R1 parquet, corpus jsonl and the synthetic world."""
