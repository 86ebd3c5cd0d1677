"""Cluster configurations: checked YAML, the job scripts dask-jobqueue submits."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from decloud.distributed.jobqueue import ClusterConfig, load_cluster_config
from decloud.errors import ClusterConfigError

PIPELINES = Path(__file__).parents[2] / "pipelines"

SLURM = """\
kind: slurm
cores: 8
memory: 32GB
processes: 2
walltime: "01:30:00"
partition: gpu
account: proj42
job_extra_directives: ["--constraint=h100"]
job_script_prologue: ["module load cuda/12", "source /opt/venv/bin/activate"]
local_directory: /scratch/local
python: /opt/venv/bin/python
gpus_per_job: 2
workers: 4
"""

PBS = """\
kind: pbs
cores: 24
memory: 96GB
processes: 6
walltime: "02:00:00"
queue: workq
account: proj42
job_script_prologue: ["source /opt/venv/bin/activate"]
python: /opt/venv/bin/python
adapt: {minimum: 0, maximum: 12}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    return path


def directives(script: str, prefix: str) -> list[str]:
    return [line[len(prefix):].strip() for line in script.splitlines()
            if line.startswith(prefix)]


def worker_command(script: str) -> str:
    lines = [line for line in script.splitlines() if "distributed.cli.dask_worker" in line]
    assert len(lines) == 1, script
    return lines[0]


def test_slurm_job_script(tmp_path: Path) -> None:
    config = load_cluster_config(write(tmp_path, SLURM))
    script = config.job_script("tcp://10.0.0.1:8786")
    lines = directives(script, "#SBATCH")
    assert "-p gpu" in lines and "-A proj42" in lines and "-t 01:30:00" in lines
    assert "--cpus-per-task=8" in lines and "--constraint=h100" in lines
    assert "--gres=gpu:2" in lines  # from gpus_per_job
    assert any(re.fullmatch(r"--mem=\d+G", d) for d in lines)
    # The prologue runs before the worker, in order.
    body = script.splitlines()
    assert body.index("module load cuda/12") < body.index("source /opt/venv/bin/activate") \
        < body.index(worker_command(script))
    command = worker_command(script).split()
    assert command[:4] == ["/opt/venv/bin/python", "-m", "distributed.cli.dask_worker",
                           "tcp://10.0.0.1:8786"]
    assert command[command.index("--nworkers") + 1] == "2"
    assert command[command.index("--nthreads") + 1] == "4"
    assert command[command.index("--local-directory") + 1] == "/scratch/local"
    # One device per worker process: the nannies preload the pinning hook.
    assert command[command.index("--preload-nanny") + 1] == "decloud.distributed.gpus"


def test_a_gpu_directive_given_is_not_doubled(tmp_path: Path) -> None:
    text = SLURM.replace('["--constraint=h100"]', '["--gpus-per-node=2"]')
    lines = directives(load_cluster_config(write(tmp_path, text)).job_script(), "#SBATCH")
    assert "--gpus-per-node=2" in lines and not any(d.startswith("--gres") for d in lines)


def test_pbs_job_script(tmp_path: Path) -> None:
    config = load_cluster_config(write(tmp_path, PBS))
    script = config.job_script()
    lines = directives(script, "#PBS")
    assert "-q workq" in lines and "-A proj42" in lines
    assert "-l walltime=02:00:00" in lines
    assert "-l select=1:ncpus=24:mem=90GB" in lines
    command = worker_command(script).split()
    assert command[3] == "tcp://scheduler:8786"
    assert command[command.index("--nworkers") + 1] == "6"
    assert command[command.index("--nthreads") + 1] == "4"
    assert "--preload-nanny" not in command  # no GPUs


def test_pbs_gpus_go_into_the_select_line(tmp_path: Path) -> None:
    text = PBS.replace("processes: 6", "processes: 4\ngpus_per_job: 4")
    lines = directives(load_cluster_config(write(tmp_path, text)).job_script(), "#PBS")
    assert "-l select=1:ncpus=24:mem=90GB:ngpus=4" in lines


@pytest.mark.parametrize(("text", "field", "words"), [
    (SLURM + "gpu: 2\n", "gpu", "unknown key"),
    (SLURM.replace("cores: 8", "cores: eight"), "cores", "integer"),
    (SLURM.replace("cores: 8\n", ""), "cores", "missing"),
    (SLURM.replace("kind: slurm", "kind: sge"), "kind", "unknown kind 'sge'"),
    (SLURM.replace("memory: 32GB", "memory: lots"), "memory", "not an amount of memory"),
    (SLURM.replace('"01:30:00"', '"90 minutes"'), "walltime", "HH:MM:SS"),
    (SLURM.replace("gpus_per_job: 2", "gpus_per_job: 4"), "processes", "one worker per device"),
    (PBS.replace("maximum: 12", "maximum: 12, minimum: 20"), "adapt", "above maximum"),
    (PBS + "workers: 3\n", "adapt", "not both"),
    (SLURM + "resource_spec: select=1\n", "resource_spec", "PBS setting"),
    (PBS.replace("processes: 6", "processes: 30"), "processes", "30 worker processes"),
    ("- kind: slurm\n", None, "is a mapping"),
    ("kind: [slurm\n", None, "invalid YAML"),
])
def test_a_wrong_file_is_refused_naming_the_file_and_field(
        tmp_path: Path, text: str, field: str | None, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ClusterConfigError) as caught:
        load_cluster_config(path)
    assert caught.value.path == str(path)
    assert caught.value.field == field
    assert words in caught.value.message


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ClusterConfigError, match="cannot read"):
        load_cluster_config(tmp_path / "none.yaml")


@pytest.mark.parametrize("name", ["cluster-slurm.yaml", "cluster-pbs.yaml"])
def test_the_shipped_examples_load_and_give_a_script(name: str) -> None:
    config = load_cluster_config(PIPELINES / name)
    script = config.job_script()
    prefix = "#SBATCH" if config.kind == "slurm" else "#PBS"
    assert directives(script, prefix) and worker_command(script)
    assert config.workers is not None or config.adapt is not None


def test_without_dask_jobqueue_the_message_says_what_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_cluster_config(write(tmp_path, SLURM))
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # import fails
    with pytest.raises(ClusterConfigError, match=r"decloud\[cluster\]") as caught:
        config.make_cluster(workers=0)
    assert caught.value.path == str(tmp_path / "cluster.yaml")


def test_a_local_kind_has_no_job_script() -> None:
    config = ClusterConfig(kind="local", cores=2, memory="1GB")
    with pytest.raises(ClusterConfigError, match="submits no jobs"):
        config.job_script()


def test_make_cluster_builds_the_cluster_whose_script_was_checked(tmp_path: Path) -> None:
    # No sbatch here: no workers are asked for, so nothing is submitted.
    from dask_jobqueue import SLURMCluster

    config = load_cluster_config(write(tmp_path, SLURM))
    with config.make_cluster(workers=0, scheduler_options={"dashboard_address": ":0"}) \
            as cluster:
        assert isinstance(cluster, SLURMCluster)
        address = cluster.scheduler_address
        assert config.job_script(address) == cluster.job_script().replace(
            cluster._dummy_job.name, f"{config.job_name}-0")


@pytest.mark.slow
def test_a_local_kind_starts_a_local_cluster_of_its_shape() -> None:
    from distributed import Client

    config = ClusterConfig(kind="local", cores=2, memory="1GB", processes=2)
    with config.make_cluster(dashboard_address=":0") as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        info = client.scheduler_info()["workers"]
        assert sorted(w["nthreads"] for w in info.values()) == [1, 1]


def test_one_gpu_per_job_pins_its_device_like_a_local_cluster(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import distributed

    text = SLURM.replace("processes: 2", "processes: 1").replace("gpus_per_job: 2",
                                                                 "gpus_per_job: 1")
    command = worker_command(load_cluster_config(write(tmp_path, text)).job_script()).split()
    assert command[command.index("--preload-nanny") + 1] == "decloud.distributed.gpus"
    seen: dict[str, object] = {}
    monkeypatch.setattr(distributed, "LocalCluster", lambda **kw: seen.update(kw))
    ClusterConfig(kind="local", cores=1, memory="1GB", gpus_per_job=1).make_cluster()
    assert seen["preload_nanny"] == ["decloud.distributed.gpus"]


def test_a_local_directory_is_expanded_here_and_left_to_the_shell_in_a_job(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import distributed

    monkeypatch.setenv("TMPDIR", str(tmp_path / "node"))
    seen: dict[str, object] = {}
    monkeypatch.setattr(distributed, "LocalCluster", lambda **kw: seen.update(kw))
    ClusterConfig(kind="local", cores=1, memory="1GB",
                  local_directory="$TMPDIR/dask").make_cluster()
    assert seen["local_directory"] == str(tmp_path / "node" / "dask")
    # In a batch script the node's shell expands it (the submitting host's value is wrong).
    text = SLURM.replace("/scratch/local", "$TMPDIR/dask")
    command = worker_command(load_cluster_config(write(tmp_path, text)).job_script()).split()
    assert command[command.index("--local-directory") + 1] == "$TMPDIR/dask"
