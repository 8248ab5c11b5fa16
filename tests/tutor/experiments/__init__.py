"""Tests of the research harness (tutor/experiments): the simulator and policy evaluation."""
