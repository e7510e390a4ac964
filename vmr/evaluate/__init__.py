"""Evaluation: full-ranking metrics (`metrics`), `vmr eval` (`run_eval`), `vmr report`
(`report`)."""
