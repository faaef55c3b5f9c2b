"""Planning with known dynamics: pure functions that need no training loop.

shooting.py (random shooting, CEM), mcts.py (UCT with rollouts), lqr.py (LQR, noisy LQR,
parallel LQR, iLQR) and mpc.py (the receding-horizon loop in a gymnax env, ``run_planner``).
"""
