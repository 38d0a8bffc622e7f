"""The PyTorch side of chase-deploy: Chase sparse training, models, data, recipes, checkpoints.

This package never imports ``chase_deploy`` so that training works without ONNX installed.
"""

# Marker checked by chase_deploy to detect a user's own ``train`` module shadowing this package.
CHASE_DEPLOY_TRAIN = True

__all__ = ["CHASE_DEPLOY_TRAIN"]
