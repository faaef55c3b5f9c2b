"""Planning with known dynamics: pure functions that need no training loop.

shooting.py (random shooting, CEM), mcts.py (UCT with rollouts), lqr.py (LQR, noisy LQR,
parallel LQR, iLQR), linear_gaussian.py (local linear-Gaussian models and controllers, the
trajectory KL and the KL-constrained LQR step of LQR-FLM and GPS) and mpc.py (the
receding-horizon loop in a gymnax env).
"""
