"""Where bytes live: the git adapter (``git_ops``, the only module that runs ``git``), the DVC
adapter (``dvc_ops``/``storage``, the only modules that import DVC), DVC lock repair, the crash journal
(``txn``) and the installation of git hook shims. Knows nothing about releases or models."""
