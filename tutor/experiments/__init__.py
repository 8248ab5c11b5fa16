"""The research harness: does the tutor teach? Simulated learners and policy evaluation.

Nothing in the running service imports this package; it drives the service from outside,
through the same code path as the HTTP API, to measure what its recommendations do to
learners whose true mastery is known.

* :mod:`.simulate`: simulated learners with a hidden ground truth (prerequisites, learning,
  forgetting), named world settings and calibration of the simulator to real data;
* :mod:`.policy_setup`: the tutoring policies an evaluation compares and its configuration
  (:class:`~.policy_setup.EvalConfig`, policy names, evaluation cohorts);
* :mod:`.policy_eval`: running an evaluation: training the models on a simulated log,
  building the service in-process, running every policy on the same learners, the HTTP check;
* :mod:`.policy_report`: the outcomes: per-learner results, confidence intervals, the verdict
  against the baselines, tables, plots and the summary;
* :mod:`.cli`: the ``tutor simulate`` and ``tutor policy-eval`` commands.
"""
