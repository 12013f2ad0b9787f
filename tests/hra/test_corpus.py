"""The corpus builder: voice catalog and groups, sentence assignment, a tiny real build (espeak-ng + sox)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from hra.corpus.__main__ import main as corpus_cli
from hra.corpus.build import MANIFEST, BuildOptions, build_corpus, plan_voice, read_manifest
from hra.corpus.synth import MAX_SECONDS, MIN_SECONDS, engine_command, estimate_seconds
from hra.corpus.survey import format_table, survey_corpus, write_survey
from hra.corpus.text import assign_sentences, load_sentences
from hra.corpus.voices import GROUPS, VOICES, Voice, get_voice, select_voices, stable_seed, voices_in_group
from hra.text import normalize

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


class TestVoiceCatalog:
    def test_names_are_unique_and_stable(self) -> None:
        names = [v.name for v in VOICES]
        assert len(names) == len(set(names))
        # seeds come from the names alone: the same on every machine
        assert get_voice("espeak-pt-br").seed == stable_seed("espeak-pt-br") == 1852296656

    def test_groups_are_disjoint_and_cover_the_catalog(self) -> None:
        groups = {g: {v.name for v in voices_in_group(g)} for g in GROUPS}
        assert sum(len(s) for s in groups.values()) == len(VOICES)
        assert not groups["controller"] & groups["new_speaker"]
        assert not groups["standard"] & (groups["controller"] | groups["new_speaker"])

    def test_catalog_has_dozens_of_voices_and_a_controller_majority(self) -> None:
        assert len(VOICES) >= 48
        trainable = len(voices_in_group("controller")) + len(voices_in_group("new_speaker"))
        assert 0.6 <= len(voices_in_group("controller")) / trainable <= 0.75

    def test_new_speakers_include_accented_and_atypical_voices(self) -> None:
        new = voices_in_group("new_speaker")
        accented = {v.language for v in new if v.kind == "accented"}
        assert {"pt-br", "pl"} <= accented
        assert len(accented) >= 5
        assert sum(v.kind == "atypical" for v in new) >= 2

    def test_no_controller_voice_speaks_the_language_of_an_accented_new_speaker(self) -> None:
        new_accents = {v.language for v in voices_in_group("new_speaker") if v.kind == "accented"}
        controller_languages = {v.language for v in voices_in_group("controller")}
        assert not new_accents & controller_languages

    def test_standard_voices_are_plain_us_english(self) -> None:
        for v in voices_in_group("standard"):
            assert v.accent == "en-US" and v.kind == "english" and not v.effects and v.noise_snr_db is None

    def test_select_voices_by_group_and_name_in_catalog_order(self) -> None:
        chosen = select_voices("espeak-pl,standard")
        assert [v.name for v in chosen] == [v.name for v in VOICES if v.group == "standard" or v.name == "espeak-pl"]
        with pytest.raises(KeyError):
            select_voices("no-such-voice")

    def test_voice_rejects_bad_settings(self) -> None:
        with pytest.raises(ValueError):
            Voice("Bad Name", "controller", "english", "espeak-ng", "en-us", "en-US")
        with pytest.raises(ValueError):
            Voice("flite-x", "controller", "english", "flite", "kal", "en-US", pitch=40)

    def test_engine_commands(self, tmp_path: Path) -> None:
        txt, wav = tmp_path / "t.txt", tmp_path / "o.wav"
        cmd = engine_command(get_voice("atyp-en-rp-halting"), txt, wav)
        assert cmd[:3] == ["espeak-ng", "-v", "en-gb-x-rp"] and "-g" in cmd and cmd[-2:] == ["-f", str(txt)]
        assert engine_command(get_voice("flite-slt"), txt, wav)[:3] == ["flite", "-voice", "slt"]
        assert "(voice_kal_diphone)" in engine_command(get_voice("festival-kal"), txt, wav)


class TestSentenceAssignment:
    def test_sentence_asset_is_plain_and_unique(self) -> None:
        sentences = load_sentences()
        assert len(sentences) > 3000
        assert len({s.text for s in sentences}) == len(sentences)
        assert all(4 <= s.n_words <= 20 and not any(c.isdigit() for c in s.text) for s in sentences)

    def test_train_and_eval_pools_never_share_a_sentence(self) -> None:
        train = {s.text for v in VOICES for s in assign_sentences(v.seed, "train", 50)}
        held_out = {s.text for v in VOICES for s in assign_sentences(v.seed, "eval", 20)}
        assert not train & held_out

    def test_assignment_is_deterministic_and_differs_between_voices(self) -> None:
        a, b = get_voice("espeak-pt-br"), get_voice("espeak-pl")
        first = [s.text for s in assign_sentences(a.seed, "train", 40)]
        assert first == [s.text for s in assign_sentences(a.seed, "train", 40)]
        assert len(set(first)) == 40
        other = [s.text for s in assign_sentences(b.seed, "train", 40)]
        assert len(set(first) & set(other)) < 10

    def test_a_larger_request_extends_a_voice_without_changing_its_beginning(self) -> None:
        voice = get_voice("espeak-hu")
        small = plan_voice(voice, BuildOptions(n_train=10, n_eval=5))
        large = plan_voice(voice, BuildOptions(n_train=30, n_eval=12))
        by_id = {u.id: u.text for u in large}
        assert all(by_id[u.id] == u.text for u in small)

    def test_plan_respects_word_and_duration_bounds(self) -> None:
        voice = get_voice("atyp-en-us-halting-noise")
        plan = plan_voice(voice, BuildOptions(n_train=40, n_eval=10, max_words=12, max_est_seconds=6.0))
        assert len(plan) == 50 and {u.split for u in plan} == {"train", "eval"}
        assert all(len(u.text.split()) <= 12 and estimate_seconds(voice, u.text) <= 6.0 for u in plan)

    def test_asking_for_more_sentences_than_the_pool_holds_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="sentences"):
            assign_sentences(1, "eval", 100, max_words=4)


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                    reason="needs the Debian packages espeak-ng and sox (make deps)")
class TestBuild:
    VOICES = "espeak-pt-br,espeak-en-us"

    def test_tiny_build_writes_valid_flac_and_manifest_and_resumes(self, tmp_path: Path) -> None:
        out = tmp_path / "corpus"
        voices = select_voices(self.VOICES)
        options = BuildOptions(n_train=1, n_eval=1, jobs=2)
        first = build_corpus(out, voices, options, progress=False)
        assert (first.planned, first.synthesized, first.skipped) == (4, 4, 0)

        rows = read_manifest(out / MANIFEST)
        assert len(rows) == 4
        assert {r["voice"] for r in rows} == {"espeak-pt-br", "espeak-en-us"}
        for row in rows:
            assert set(row) >= {"id", "voice", "group", "split", "path", "text", "duration_s", "engine", "licence"}
            info = sf.info(out / str(row["path"]))
            assert (info.format, info.samplerate, info.channels) == ("FLAC", 16000, 1)
            assert MIN_SECONDS <= info.frames / 16000 <= MAX_SECONDS
            assert abs(info.frames / 16000 - float(row["duration_s"])) < 0.01
        before = {p: p.stat().st_mtime_ns for p in out.rglob("*.flac")}

        second = build_corpus(out, voices, options, progress=False)
        assert (second.synthesized, second.skipped) == (0, 4)
        assert {p: p.stat().st_mtime_ns for p in out.rglob("*.flac")} == before
        assert read_manifest(out / MANIFEST) == rows

    def test_a_missing_or_broken_file_is_synthesized_again_identically(self, tmp_path: Path) -> None:
        out = tmp_path / "corpus"
        voices = select_voices("espeak-pl")
        options = BuildOptions(n_train=2, n_eval=0, jobs=1)
        build_corpus(out, voices, options, progress=False)
        path = out / "espeak-pl" / "espeak-pl-train-0001.flac"
        audio = sf.read(path)[0]
        path.write_bytes(b"truncated")
        report = build_corpus(out, voices, options, progress=False)
        assert report.synthesized == 1
        assert (sf.read(path)[0] == audio).all()

    def test_cli_build(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        out = tmp_path / "cli"
        assert corpus_cli(["build", "--out", str(out), "--voices", "espeak-vi", "--train", "1", "--quiet"]) == 0
        assert "1 synthesized" in capsys.readouterr().out
        rows = [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]
        assert [r["id"] for r in rows] == ["espeak-vi-train-0000"]


    def test_survey_reports_wer_per_voice_with_any_transcriber(self, tmp_path: Path) -> None:
        out = tmp_path / "corpus"
        build_corpus(out, select_voices("espeak-it"), BuildOptions(n_train=0, n_eval=2, jobs=1), progress=False)
        texts = {str(r["path"]): str(r["text"]) for r in read_manifest(out / MANIFEST)}
        loop = " ".join(["thank you"] * 20)
        answers = iter([texts["espeak-it/espeak-it-eval-0000.flac"], loop])
        results = survey_corpus(out, lambda audio: next(answers), per_voice=5)
        (r,) = results
        assert (r.voice, r.group, r.n_utterances) == ("espeak-it", "new_speaker", 2)
        n_second = len(normalize(texts["espeak-it/espeak-it-eval-0001.flac"]).split())
        assert r.wer_capped == pytest.approx(n_second / r.words, abs=1e-4)
        assert r.wer > r.wer_capped  # the loop's insertions count in full
        assert r.utterances[1]["hypothesis"] == loop
        write_survey(tmp_path / "survey.json", results, {"recognizer": "fake"})
        doc = json.loads((tmp_path / "survey.json").read_text())
        assert doc["voices"][0]["voice"] == "espeak-it" and "espeak-it" in format_table(results)


class TestCommittedFixtures:
    def test_speaker_fixture_is_short_16k_mono_flac_with_manifest(self) -> None:
        folder = FIXTURES / "speaker_ptbr"
        rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
        assert sum(r["split"] == "train" for r in rows) == 60 and sum(r["split"] == "eval" for r in rows) == 24
        assert get_voice(rows[0]["voice"]).group == "new_speaker"
        total = 0
        for row in rows:
            info = sf.info(folder / row["file"])
            assert (info.format, info.samplerate, info.channels) == ("FLAC", 16000, 1)
            assert 1.5 <= info.frames / 16000 <= 4.5 and row["text"]
            total += (folder / row["file"]).stat().st_size
        assert total < 4.5 * 2**20

    def test_format_fixtures(self) -> None:
        folder = FIXTURES / "formats"
        wav = sf.info(folder / "speech_44k_stereo.wav")
        assert (wav.samplerate, wav.channels) == (44100, 2) and 0.5 < wav.duration < 2.0
        assert sf.info(folder / "speech.ogg").format == "OGG"
        assert sf.info(folder / "speech.mp3").format == "MP3"
        for name in ("speech.ogg", "speech.mp3"):
            assert 0.5 < sf.info(folder / name).duration < 2.0
        assert (folder / "garbage.bin").stat().st_size == 4096
        assert sum(p.stat().st_size for p in folder.iterdir()) < 300 * 1024
