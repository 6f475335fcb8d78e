import subprocess
import sys


def test_import_cotune_does_not_import_heavy_libraries():
    code = (
        "import sys, cotune, cotune.lm, cotune.program, cotune.evaluate, cotune.optimize, cotune.tasks, cotune.retrieve;"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'bm25s', 'sklearn') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_public_optimizers_and_tasks_load_without_torch():
    code = (
        "import sys, cotune as ct;"
        "[getattr(ct, n) for n in ('tasks', 'BetterTogether', 'BootstrapFewShotWithRandomSearch', 'GPO',"
        " 'BootstrapFinetune', 'LoRAConfig', 'TrainingConfig')];"
        "ct.tasks.load_task('iris');"
        "print(','.join(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_errors_all_is_pinned():
    import cotune.errors as errors

    assert errors.__all__ == [
        "CotuneError",
        "ConfigError",
        "UnknownChoiceError",
        "DataError",
        "ParseError",
        "LMError",
        "LMConnectionError",
        "TrainingError",
        "EvaluationError",
        "LMTimeoutError",
        "InfrastructureError",
        "RunInUseError",
        "CacheError",
        "is_infrastructure_error",
    ]
