"""Deployment: ONNX export, a torch-free runtime, a fixed-rate control loop and robot interfaces.

Import the submodules directly. ``runtime``, ``loop``, ``robot``, ``wire``, ``clock``, ``chunks`` and
``sidecar`` need only numpy and onnxruntime (no torch, no mujoco), so a controller process stays
small; ``export`` needs torch, and ``sim_server`` runs the MuJoCo task in its own process.
"""
