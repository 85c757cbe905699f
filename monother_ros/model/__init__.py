"""Torch networks of the depth family: DINOv2 ViT, DPT decoder, metric heads, checkpoints.

Public entry points (import the submodules directly; this package imports nothing heavy itself):

* ``monother_ros.model.variants``: ``ModelConfig``, ``PRESETS``, ``get_preset``;
* ``monother_ros.model.branch``: ``DepthBranch``, ``BranchOutput``, ``ExportableBranch``;
* ``monother_ros.model.checkpoints``: ``save_model``, ``load_model``, ``import_checkpoint``,
  ``read_torch_checkpoint``, ``register_importer``.
"""
