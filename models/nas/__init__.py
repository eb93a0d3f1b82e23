"""The NASRec-style supernet, subnets, training and evaluation."""
