"""The localiser's VinDr-CXR recipe and model config through anomalib's CLI parser (no training, no data)."""

from __future__ import annotations

from pathlib import Path

from anomalib.cli import AnomalibCLI

from anomalib_medical.data import VinDrCXR
from anomalib_medical.data.utils.baugh import BaughPreprocessing
from anomalib_medical.models import SyntheticTaskLocaliser, SyntheticTaskLocaliserEnsemble
from anomalib_medical.models.synthetic_task_localiser.tasks import task_split
from tests.conftest import REPO_ROOT, parse_recipe

VINDR_RECIPE = REPO_ROOT / "configs" / "synthetic_task_localiser_vindr_cxr.yaml"
MODEL_CONFIG = REPO_ROOT / "configs" / "model" / "synthetic_task_localiser.yaml"
VINDR_DATA = REPO_ROOT / "configs" / "data" / "vindr_cxr.yaml"


def _parse(arguments: list[str | Path]) -> AnomalibCLI:
    return AnomalibCLI([str(argument) for argument in arguments], run=False)


def _equalisations(cli: AnomalibCLI) -> int:
    """How many times the recipe equalises the histogram: in the data preset or option, and in the model."""
    data = (
        isinstance(cli.datamodule.preprocessing, BaughPreprocessing)
        or cli.datamodule.preprocessing.histogram_equalisation
    )
    network = cli.model.model.members[0] if isinstance(cli.model, SyntheticTaskLocaliserEnsemble) else cli.model.model
    return int(data) + int(network.histogram_equalisation)


def test_vindr_recipe_is_the_paper_protocol():
    cli = parse_recipe(VINDR_RECIPE)
    assert isinstance(cli.datamodule, VinDrCXR) and isinstance(cli.model, SyntheticTaskLocaliser)
    assert isinstance(cli.datamodule.preprocessing, BaughPreprocessing)
    assert cli.datamodule.preprocessing.image_size == (256, 256)
    assert cli.datamodule.split == "ddad" and cli.datamodule.ddad_cleaning
    assert _equalisations(cli) == 1
    tasks = cli.config["train"]["model"]["init_args"]
    assert (list(tasks["train_tasks"]), list(tasks["validation_tasks"])) == task_split(1, 0)  # a 1/4 fold
    assert tasks["max_channels"] == 512


def test_vindr_recipe_tested_on_the_official_test_set():
    arguments = ["--data.test_set", "official", "--ckpt_path", "model.ckpt"]
    cli = _parse(["test", "--config", VINDR_RECIPE, *arguments])
    assert cli.datamodule.test_set == "official"
    assert cli.datamodule.split == "ddad"  # the DDAD-trained model, VinDr_ts test images


def test_model_config_with_the_vindr_data_config_equalises_once():
    raw = _parse(["fit", "--config", MODEL_CONFIG, "--data", VINDR_DATA])
    assert _equalisations(raw) == 0  # display preset, no equalisation: the model config says to switch one on
    baugh = _parse(["fit", "--config", MODEL_CONFIG, "--data", VINDR_DATA, "--data.preprocessing", "baugh"])
    assert _equalisations(baugh) == 1


def test_ensemble_vindr_ts_command_fits_the_recipes_fold_models():
    """The recipe's VinDr_ts command builds members shaped like the recipe's fold models (one member here)."""
    fold = _parse(["fit", "--config", VINDR_RECIPE]).model.model.state_dict()
    model = ["--model", "SyntheticTaskLocaliserEnsemble", "--model.num_members", "1", "--model.max_channels", "512"]
    data = ["--data", VINDR_DATA, "--data.preprocessing", "baugh", "--data.test_set", "official"]
    cli = _parse(["test", *model, *data, "--ckpt_path", "model.ckpt"])
    assert isinstance(cli.model, SyntheticTaskLocaliserEnsemble)
    assert cli.datamodule.test_set == "official"
    assert _equalisations(cli) == 1
    member = {key.removeprefix("members.0."): tuple(value.shape) for key, value in cli.model.model.state_dict().items()}
    assert member == {key: tuple(value.shape) for key, value in fold.items()}
