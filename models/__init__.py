"""models: CTR data pipeline, the NASRec-style supernet, subnets and hand-designed baselines."""
