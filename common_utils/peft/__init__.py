"""PEFT: one factory for the course's eight methods (methods) and the bottleneck adapters peft lacks (adapters)."""
