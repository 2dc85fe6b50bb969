"""The data files csrl knows: relative path, sha256, size, task, and a pinned public download URL.

The table below is ``/work/shared/data/SHA256SUMS`` of the project's reference data directory (222 files,
about 77 MB), grouped by directory, with each file's size added. Layout (relative to the data root)::

    sts/sts12 ... sts/sts16   SentEval-processed STS12-16 (STS.input.*, STS.gs.*); raw/ = SemEval release
    sts/stsb, sts/sickr       STS-Benchmark and SICK-R (SentEval-processed); raw/ = original releases
    sts/variants/yan-soares_tokenization/sts1x   alternative Moses tokenization of the STS12-16 inputs
    transfer/<TASK>           SentEval transfer tasks (MR, CR, SUBJ, MPQA, SST binary/fine, TREC, MRPC)
    nli/                      SentEval SNLI dev/test and a 9-row sample of SimCSE's nli_for_simcse.csv
    train/wiki/               first 1.28 MB of SimCSE's wiki1m_for_simcse.txt
    train/...                 extra training sentences (*.sent.txt, derived) and their source files

Groups: ``sts``, ``sts-raw``, ``sts-variants``, ``transfer``, ``nli``, ``wiki`` (all downloadable) and
``train-extra`` (no public URL: the derived ``*.sent.txt`` files exist nowhere upstream; fetch them from
a mirror with ``base_url``); ``train`` names ``wiki`` plus ``train-extra``. Tasks: ``sts12``..``sts16``,
``stsb``, ``sickr``, ``mr``, ``cr``, ``subj``, ``mpqa``, ``sst2``, ``sst5``, ``trec``, ``mrpc``, ``snli``,
``nli-sample``, ``wiki1m-head``, ``train-extra``. A file is *required* when its task cannot run without
it (STS inputs and gold files of scored sub-datasets, the data files of the other tasks); readmes,
licences, ``STS.gs.ALL.txt``, the gold-only ``STS.gs.SMT.txt`` (no input exists), raw releases and
variants are optional.

Download URLs point at ``raw.githubusercontent.com/<repo>/<commit>/<path>`` of the sources named in the
data README. Commits are full SHAs except brmson/dataset-sts (SICK raw files, ``sts-raw`` group only),
whose commit is known only as ``e1d3375``; if GitHub does not resolve the short SHA, use ``base_url``.
URLs were derived from the README's source paths and could not be tried offline; the sha256 check
after every download is what guarantees the bytes.

A file whose hash differs is not an error: a hash listed in ``variants`` (the yan-soares tokenization
for the STS12-16 inputs) is reported as that variant, any other as *unrecognised* (a warning).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Literal

from csrl.errors import CsrlError

__all__ = [
    "GROUPS",
    "CheckReport",
    "FileStatus",
    "ManifestEntry",
    "check_data_dir",
    "default_manifest",
    "select_entries",
    "sha256_file",
]

GROUPS = ("sts", "sts-raw", "sts-variants", "transfer", "nli", "wiki", "train-extra")
ALIASES = {"train": ("wiki", "train-extra")}  # names accepted besides groups and tasks

# "sha256 size name" rows under "[directory]" headers, from SHA256SUMS.
_TABLE = """\
[nli]
a8177c6e1c1022187b8edba76b9587e4983239339efee0dae4dc0e64742fd45e 1978 nli_for_simcse.sample.csv
[nli/senteval_snli]
d164d72435c3289fe53cb01e983f7c06e104bf192c0cae9caf2e99bf2e15f974 108391 labels.dev
e25c363e5cc70d5494d6e6555d8053eced22dca836e0f03067530eaad3d4f5f5 108118 labels.test
28a398b5478b10b4b851d4bb5b2e5767171519add6586015ed50b9436df11d00 743182 s1.dev
62cb8107dc3c56a4376e5e521842be24e0d61c92c346b94917da2bbf2a47d8be 738834 s1.test
a8c59709630b64ba103f7784c0cb7104a6baf23234562487264d9634714f5d2b 400948 s2.dev
1174f3ad30a3c30fc0f9eeffc1b3b6a79e0514026c5a658968a8e2a324b311a1 398274 s2.test
[sts/sickr]
4c9aa1bb3c5bbf732520fe35b23c121739472a38eb47e7d5336e6df51896be02 560638 SICK_test_annotated.txt
d07bdb73963dda1b2012f4d78c24044cd9503b1109218a518a481616973cf960 506839 SICK_train.txt
0d0786bd8671a0a70614f2f890b8ab24b3c24d1ccb624bcca87618091fbe4f11 57293 SICK_trial.txt
[sts/sickr/raw]
2b8aa806658d6fc23c6824c83776c2d4fee7556000817b5ec0f982861413b7d0 559979 SICK_test_annotated.txt
266cf8047149bd1d68138dd30439f3122bff30069740ac6705bb6197d9f1b48e 506243 SICK_train.txt
5a88cfb62f8c6bd2a3cce0f2421ba2cb8c2be5ab4a800f6f01e2c64aafb7db56 57225 SICK_trial.txt
4ff14a2b07603f2214c2803a6e012048c795be5ba4e5d1d33b87d7210f633bf7 1337 readme.txt
[sts/sts12]
d47be1641ac98ac312de6f0746b65683df392f70d843eaac9fb10ebd4cb4cb63 3002 00-readme.txt
5bcbfda125ad56a1b924763482420b585bea9bf74dc2c18d88d62cd6d2e3422f 18648 STS.gs.ALL.txt
5526be59228bc34ccb3cb6f1f56c0d7278d3419b8886713ae016fd92b151f19c 4500 STS.gs.MSRpar.txt
9c6096c6bcfb0144c8bbddb00900ca9198c88498630cd0c8f08d18365f1d7150 4500 STS.gs.MSRvid.txt
708530c4d006d06881f3289fce35d624d7efe562dcf0fe5f8aa0eec3a135f6d4 2754 STS.gs.SMTeuroparl.txt
088d8ca22c0aa406e4a5d2e6e308a4f38b482b8e736c2445a38ffb6e4c4fb4fd 4500 STS.gs.surprise.OnWN.txt
aa6dfc868db333c43dc59be14d46fa6587c7ebddc0d497e717f647bf35121cf1 2394 STS.gs.surprise.SMTnews.txt
093b36d9cc1cd26364885c0f5d5be7ed024f475bceb552384f7fd489174b3c4f 168526 STS.input.MSRpar.txt
5a007f6882ed3398afdbb0d1ed093457c4adbac82a5b411ea356e0985650c39f 50414 STS.input.MSRvid.txt
971d76409ebd10a2285a846a20fd035e4e4ba2f85054e2869f5b41bb3182ca82 61019 STS.input.SMTeuroparl.txt
1059c1b66fc72071881175754d3a01158e423ec6b032e1dd87b18fc7ecb1e8d9 68954 STS.input.surprise.OnWN.txt
048cbedbba58a136722e9d102f0416326aa04644180e031318c28caf90258585 60008 STS.input.surprise.SMTnews.txt
[sts/sts12/raw]
d47be1641ac98ac312de6f0746b65683df392f70d843eaac9fb10ebd4cb4cb63 3002 00-readme.txt
5bcbfda125ad56a1b924763482420b585bea9bf74dc2c18d88d62cd6d2e3422f 18648 STS.gs.ALL.txt
5526be59228bc34ccb3cb6f1f56c0d7278d3419b8886713ae016fd92b151f19c 4500 STS.gs.MSRpar.txt
9c6096c6bcfb0144c8bbddb00900ca9198c88498630cd0c8f08d18365f1d7150 4500 STS.gs.MSRvid.txt
708530c4d006d06881f3289fce35d624d7efe562dcf0fe5f8aa0eec3a135f6d4 2754 STS.gs.SMTeuroparl.txt
088d8ca22c0aa406e4a5d2e6e308a4f38b482b8e736c2445a38ffb6e4c4fb4fd 4500 STS.gs.surprise.OnWN.txt
aa6dfc868db333c43dc59be14d46fa6587c7ebddc0d497e717f647bf35121cf1 2394 STS.gs.surprise.SMTnews.txt
76bf7089f9e7c05732163a227b3ce679512554513eb783f2548b07d659bd733d 163764 STS.input.MSRpar.txt
476d14034a241f71b832e4ae557dd6cdbe265b57c915570a2583f93b4456948d 48893 STS.input.MSRvid.txt
dd31dbb6e7eef8a0d00347fe012f7cf372943167e30f60f6fb3b10219a41941f 59522 STS.input.SMTeuroparl.txt
07ec7b91348aece0873b41f7fc4e76e9fddf05bdb82c048c98d92f5db0bec07d 67373 STS.input.surprise.OnWN.txt
2788a98ef33c3b7b704ef4891fe863cfcf061338e8aa41cb737d0f137f3ba03c 58678 STS.input.surprise.SMTnews.txt
[sts/sts13]
531ee28a3787b11dd14dda8d809e724479d87f9705120494aad584c9cb14a6ce 8428 00-readme.txt
8ca95b7228119578e2007839cf7969f22c4f1fd41fd610c4b7f9683072d98066 685 STS.gs.FNWN.txt
0cd497aaddb00a2fb6db25f77bccfc09e8aa012e11549b81b434bab1a27ad954 2001 STS.gs.OnWN.txt
a09775ba2fafc9cbe0a7d0a08f0c729789b0d6c99dc4867a86b45b71a73f004e 2753 STS.gs.SMT.txt
f49f64089011436dd296ef384c07160219406feef7dc4b9fa2af52a519f32bc6 2716 STS.gs.headlines.txt
7bcc0fc86d30c8980c9ac9735c612492abd236524bec32bed98070e225b2e023 46853 STS.input.FNWN.txt
3c616d878f3d7bfbadce1657bcc5a78d7d429fd10fc2e31195d314543fecab1a 48367 STS.input.OnWN.txt
e60c724b4b620802f42d7696f27e6a8153205a716b142f0a051e2b2b2e99e505 69960 STS.input.headlines.txt
[sts/sts13/raw]
531ee28a3787b11dd14dda8d809e724479d87f9705120494aad584c9cb14a6ce 8428 00-readme.txt
8ca95b7228119578e2007839cf7969f22c4f1fd41fd610c4b7f9683072d98066 685 STS.gs.FNWN.txt
0cd497aaddb00a2fb6db25f77bccfc09e8aa012e11549b81b434bab1a27ad954 2001 STS.gs.OnWN.txt
a09775ba2fafc9cbe0a7d0a08f0c729789b0d6c99dc4867a86b45b71a73f004e 2753 STS.gs.SMT.txt
f49f64089011436dd296ef384c07160219406feef7dc4b9fa2af52a519f32bc6 2716 STS.gs.headlines.txt
b48fc64cd85703ac6431f8ea6722f325fe9620fd4f33b3d5c24dd89c553e74bc 45727 STS.input.FNWN.txt
127c66889627f26dc11864dc9be4ba1e4895ed60125985c755429ad588e4b9c8 47247 STS.input.OnWN.txt
885e6149fff28a79591ba464c13626d03593b822c88c7c04b6564354d31c7561 69120 STS.input.headlines.txt
[sts/sts14]
9fe9d64362ac42ed24010d5b00f227235a660dc2466fba743f31051fd121ef73 6782 00-readme.txt
1c80147df270ea4cfce14a47ed29f8a2f10d5dc016d02836077fd786ff7f535b 2765 STS.gs.OnWN.txt
ba6dc76696b5c93985590a325b4d142449932cdf0d715b2bab1b1743fe3c488c 1780 STS.gs.deft-forum.txt
105c5b333abd50c274efb4dae9e3e0dab36ed63eee780cfb49955b1586bd62f2 1058 STS.gs.deft-news.txt
f243c34647255cd0b994565ed4f58dd31506e7d9c9d6250d1a6dd14095625832 2610 STS.gs.headlines.txt
fc994ebacc7074c332626fa9e29542d7340a48a3cdb999b47cdb59c378523a62 2550 STS.gs.images.txt
0098c644bfeaa2d511a8297b1940771865900c372c9dd49a62726dc5ec02c9a3 2640 STS.gs.tweet-news.txt
52f462f085f6920f70115761c50924f16a4fd6caec2cfccec82311619c1be326 69801 STS.input.OnWN.txt
7d52c9b130cf0d0291b2f2ea5324363219267ffcecf0a56f4306503adb231714 43984 STS.input.deft-forum.txt
2416e9f1a13136ac213cbfd413d98cd8504edcca21c87deef3aa5c1207bc1448 63355 STS.input.deft-news.txt
08e808b7786ec7b830badf9843c55fc7930467ae75e2cd6fe8fd518496b66730 72220 STS.input.headlines.txt
3d44abc6af8d8b1c69b6e93bb386176d5896985dba91a13e5587350e92a90c83 71061 STS.input.images.txt
6b0173393868ea87f315f32971bff68b328e466678f481d4710d8488e7cc90de 95166 STS.input.tweet-news.txt
[sts/sts14/raw]
9fe9d64362ac42ed24010d5b00f227235a660dc2466fba743f31051fd121ef73 6782 00-readme.txt
1c80147df270ea4cfce14a47ed29f8a2f10d5dc016d02836077fd786ff7f535b 2765 STS.gs.OnWN.txt
ba6dc76696b5c93985590a325b4d142449932cdf0d715b2bab1b1743fe3c488c 1780 STS.gs.deft-forum.txt
105c5b333abd50c274efb4dae9e3e0dab36ed63eee780cfb49955b1586bd62f2 1058 STS.gs.deft-news.txt
f243c34647255cd0b994565ed4f58dd31506e7d9c9d6250d1a6dd14095625832 2610 STS.gs.headlines.txt
fc994ebacc7074c332626fa9e29542d7340a48a3cdb999b47cdb59c378523a62 2550 STS.gs.images.txt
0098c644bfeaa2d511a8297b1940771865900c372c9dd49a62726dc5ec02c9a3 2640 STS.gs.tweet-news.txt
a227d5fe1c1f729a52a0b39b5b36d3225e1bca3c278e7ed392cac2ecd3990f1c 68106 STS.input.OnWN.txt
8b48aa15bb850e2827446f6e98cc3c5123ff283924b4571a409aa2fab73e35c6 42219 STS.input.deft-forum.txt
92df5b8c48873cbfba36b73a77955fb965c9244776df9e9c2c4d2f6155bdeefe 62688 STS.input.deft-news.txt
a19f84294325c62a2a403b59957196fd7737f86654ded0e04e0b54bc4a8bcf9e 71549 STS.input.headlines.txt
cec1b3c08b0e4c88aeaf8dca047f5b28f4a8588eeef58475e0f16491d2bb7193 69478 STS.input.images.txt
250d29ec9394e35443b2a73016ccc55e11b20939a3b8ee3bea9a858ba2f9adc0 92117 STS.input.tweet-news.txt
[sts/sts15]
38fe35ef21a0f224b6cc51e00d138810063521cd90458a7d77e4e0aa3a79542d 877 00-readme.txt
1644301a7540e5484da285002e9269062852efb2272be614cad99c9530f6a102 3500 STS.gs.answers-forums.txt
028db213140f8c7aef7497c4ae38b6380938f20359852231669c83dce11c3701 4500 STS.gs.answers-students.txt
5736192faaccbdbecd0ef6b73ec04b24115cd2e48d55dc3b1b170da3d2a81c75 3500 STS.gs.belief.txt
e8e432f769c8a94ddb62ae3343890ac24a9dd78a116d56c707313bc59413dd56 4500 STS.gs.headlines.txt
ed8878209098c77ca7f02ac413d3fd698f92ad3425999555e50fda89fc46012a 4500 STS.gs.images.txt
65718ec23624d97933308adc08cb270db798cdd5593d35501be9bfda5ba1a28a 2494 STS.input.answers-forums.LICENSE
65e3f55333c53897c6791ff154a490857a827d4699bc2d1f18e53693dbfd0c39 359181 STS.input.answers-forums.txt
4893f736e84cea176c39c882250f6513d5bbcfa6ebe8d3ffabcef6056d0471a7 162805 STS.input.answers-students.txt
ce09c4713480fd622afbc362d22dd7ffb4e5fc6ee676602368af6f63f9ea7cb5 290126 STS.input.belief.txt
91f2a6152c574e17544c5e8a856338fa8632898b44c10d2cc9c9516ddfe682c5 147208 STS.input.headlines.txt
98b2f560e4a3e13253f10b7fd8855006dd327ab272559ab690f2c4e1e5aebca7 147016 STS.input.images.txt
[sts/sts15/raw]
38fe35ef21a0f224b6cc51e00d138810063521cd90458a7d77e4e0aa3a79542d 877 00-readme.txt
1644301a7540e5484da285002e9269062852efb2272be614cad99c9530f6a102 3500 STS.gs.answers-forums.txt
028db213140f8c7aef7497c4ae38b6380938f20359852231669c83dce11c3701 4500 STS.gs.answers-students.txt
5736192faaccbdbecd0ef6b73ec04b24115cd2e48d55dc3b1b170da3d2a81c75 3500 STS.gs.belief.txt
e8e432f769c8a94ddb62ae3343890ac24a9dd78a116d56c707313bc59413dd56 4500 STS.gs.headlines.txt
ed8878209098c77ca7f02ac413d3fd698f92ad3425999555e50fda89fc46012a 4500 STS.gs.images.txt
65718ec23624d97933308adc08cb270db798cdd5593d35501be9bfda5ba1a28a 2494 STS.input.answers-forums.LICENSE
fe8e460a74e8e38704ac4e6ddcedec89fd6e51cd0467d6f4301b444b259688e1 347534 STS.input.answers-forums.txt
16eedf46fb3b29822b275a0ddcff8e873a6eb4bafba244a17c4049ffc318d62a 161643 STS.input.answers-students.txt
6e924a19fb1abbce01a8666f07766250b46a96c89272de8e5b01d0905bc61b79 281234 STS.input.belief.txt
779c195c54b72282bd3c8ca1dbb09a4155a39b2acd13d5cf819d8555d717cf6a 145511 STS.input.headlines.txt
6f332542a75bcd18ea1442fc129306f746cd7ade7010ea274e763bfca576cc47 144021 STS.input.images.txt
[sts/sts16]
94b7380d16f832ae97bcb48536f22fe9a22e8e20f8cf88a9298f65c556e3a6f2 3543 LICENSE.txt
1b74b4c84a59f139153f0348e212bfdb33dffd3b008dfb2c4f7728c4fa27141f 2998 README.txt
332efd741b0cb247d20dd2a6cec854360c921c7e6b395f328f562d8d26057214 1826 STS.gs.answer-answer.txt
01e33a95996201a6e81e3cce9eda0f15048b77613ea64dce2929bb35479f7d85 1747 STS.gs.headlines.txt
29984944a91aaff484f2b2e5d4d434fc8a6f5ef6f578a880cccd2786f5142fdc 1501 STS.gs.plagiarism.txt
81947ed9dbe7f85b7bd249df68ed5c7b2f16f06390ad568eb5554b1e26bc5577 3531 STS.gs.postediting.txt
cf9ebf9d140191f73620cda0560947ad9283c910735d0d541b8a401a5e64afb0 1764 STS.gs.question-question.txt
92e66262159e39cb623690e243179f447fb08d493ccec6e600a021b76dd6fe9a 152958 STS.input.answer-answer.txt
f439e10cf28d9cb4dc7642a072f6ac9ac48922f147241af8fe5df3048f24804b 149790 STS.input.headlines.txt
78f5fb0756400485676f82a47703dab0402ba273a887a6d846e9790ff9300f87 207018 STS.input.plagiarism.txt
cb8e2337a17ecc60a4fb57ecb17c692e13257802d24c9bd401b4bfa574510463 808777 STS.input.postediting.txt
0b8d495236ea8c9e9eddf529b40d8570e4b38ef29a40d194d5487613b064a4bc 168145 STS.input.question-question.txt
[sts/sts16/raw]
94b7380d16f832ae97bcb48536f22fe9a22e8e20f8cf88a9298f65c556e3a6f2 3543 LICENSE.txt
1b74b4c84a59f139153f0348e212bfdb33dffd3b008dfb2c4f7728c4fa27141f 2998 README.txt
332efd741b0cb247d20dd2a6cec854360c921c7e6b395f328f562d8d26057214 1826 STS2016.gs.answer-answer.txt
01e33a95996201a6e81e3cce9eda0f15048b77613ea64dce2929bb35479f7d85 1747 STS2016.gs.headlines.txt
29984944a91aaff484f2b2e5d4d434fc8a6f5ef6f578a880cccd2786f5142fdc 1501 STS2016.gs.plagiarism.txt
81947ed9dbe7f85b7bd249df68ed5c7b2f16f06390ad568eb5554b1e26bc5577 3531 STS2016.gs.postediting.txt
cf9ebf9d140191f73620cda0560947ad9283c910735d0d541b8a401a5e64afb0 1764 STS2016.gs.question-question.txt
1770cbd3b07ef198cb8f118114dbfc22ab490ff259b7cf840909012298cf460a 621627 STS2016.input.answer-answer.ascii
7daf2cd87751a0f8b754fe705bdb280c31591d9febf5b6fce9dcb10d3b8a72a7 621670 STS2016.input.answer-answer.txt
4abc9faf7d16b52c1207834bcb101017b1c5c541e4d137a26ddf186f2d528ee5 289007 STS2016.input.headlines.ascii
ec8ee1124e71f4cc18c861f542fa8f32c86fef0703de31b0f7a02e22e935d992 289010 STS2016.input.headlines.txt
817854e5c8e004d606a656a26be7bb48f25857882ecdcca7dbda1d61ed146e2b 516587 STS2016.input.plagiarism.ascii
6760cb210f4423262fd8962674e6668409690ce888bb1617659c6886cf004019 517084 STS2016.input.plagiarism.txt
fe08761cdf93c7933a86cf4062466b6a745997c9d04d9c6fe794cc41ad888a3a 1448299 STS2016.input.postediting.ascii
a8a66185877785307803c99a0899d65aefb062c4bf7689560b95d37bb0c05474 1449412 STS2016.input.postediting.txt
1206ebfeb55a41b4f60723b2e1e476e8a0ab55aa9865e1abd1a342e069486906 727109 STS2016.input.question-question.ascii
b7f95dead3d8c59fbaacbb135643c6ebd322682db6502fdb24d4ce83c9bf016d 727206 STS2016.input.question-question.txt
[sts/stsb]
3dfc3217395f8c5dd05c5f8995f25fe2f8fd258e6dd770b3de480749caee8c70 6641 LICENSE.txt
e9488363d211c32ca5e912954f16eb9233cfed1b5b4b0475d0d812d35d7c8ef1 5994 readme.txt
fd3e4e429f32e352c7c7c76aea5c3383ee95eb98e482796b34e4e7b88a8392f3 258873 sts-dev.csv
4cde2a19c9b7232c9ce92a89e5afd99805c8f66ba432a7824e0a5bad1a0a0ea0 207065 sts-test.csv
6466868d4b49a575530554224fe2e7d8cc03e83e1f326c90e561b81bf5031fec 897480 sts-train.csv
[sts/stsb/raw]
3dfc3217395f8c5dd05c5f8995f25fe2f8fd258e6dd770b3de480749caee8c70 6641 LICENSE.txt
e9488363d211c32ca5e912954f16eb9233cfed1b5b4b0475d0d812d35d7c8ef1 5994 readme.txt
5d7e944d8b02734b07bfdb5df67db3420c64bed153fcaa1ba47ad03480cf4234 255680 sts-dev.csv
affe45928a66ee5a708531233c95b7dacbbdc57f974f002a3d32ea0180cf816a 282419 sts-test.csv
0f71910b59aa1ad973c5897f0791f3b0965a92b8f82b1a95f3eea9f4162fda82 901177 sts-train.csv
[sts/variants/yan-soares_tokenization/sts12]
21c0c6cc32f68f69d672dfae0f86935cdc2627bae4941381692941aa9320f8c4 168149 STS.input.MSRpar.txt
c4a92a3645744f77d1cda9f2af7da5d11e807ae296f6a20fe5930403fb9c4dfe 50402 STS.input.MSRvid.txt
05acf33c0fcb592347f49e279137a17e0244d7b0d37cc113134320a5d3f586e1 61015 STS.input.SMTeuroparl.txt
e605c67de4b7cee2c5629239d209e2845920f475ebd0468bdcf03d8da2ffa9cf 68924 STS.input.surprise.OnWN.txt
cc4a0b9a1355c5680a8a37c02f2d08e35f95754b9f89a2a4a05088ee5ff57ffe 59937 STS.input.surprise.SMTnews.txt
[sts/variants/yan-soares_tokenization/sts13]
a20cb41a33a528f3c089c94ef24da8eb5e26ed594937cf6fa90f3d1c79d6c53c 46833 STS.input.FNWN.txt
cb74993eef23cfa2c03da7e5a08c62e50c9baafae0fa9ba0bb5a09d8e7d2be65 48351 STS.input.OnWN.txt
637f3b4afdc8d1cc789e91a4d7217efff30e503c34a872d93e8b27e7b1136cb7 69813 STS.input.headlines.txt
[sts/variants/yan-soares_tokenization/sts14]
8cd2333328d17e3212afa2d43dd934c5521e3fd35fc786b992dc7864f9d34f8f 69761 STS.input.OnWN.txt
b39579e59c7b9f4063545c3d4643f8db16dc060cd0a35447ef56ff0aabec9d83 43750 STS.input.deft-forum.txt
cc450dcd9228211c1a311de1ff28199f166dce6f7fc81dcb5ce968a3a8a80d2d 63248 STS.input.deft-news.txt
2ed0ea55d196cdbb440ed428eb1846dcb43486a692aafb22b3bc5c14c44407c8 72107 STS.input.headlines.txt
295fc99f8a9215c330b36a08bc1ff3e428f10057be5bb915262111494b3616e2 71048 STS.input.images.txt
b25b3768762aa7cdcd89f2a25ce5049de7e4cd51b138227c3a31092ae8e2b5f5 94941 STS.input.tweet-news.txt
[sts/variants/yan-soares_tokenization/sts15]
b8f1bc125559adbb3ac5b33206472b217c12621c3a6b5a8575da47dc0b536fc4 357930 STS.input.answers-forums.txt
4893f736e84cea176c39c882250f6513d5bbcfa6ebe8d3ffabcef6056d0471a7 162805 STS.input.answers-students.txt
a54ec7af1924c900d8474586abae465819d2c03c73561aa2e76e7fa5e836faff 289003 STS.input.belief.txt
85d90b0f8f258a47758808d382188ba2ee7b1adbbf84feb776afad0e4691d5d1 146911 STS.input.headlines.txt
0dac9494186838a8f4dfbb4ee290fec8d7581cf84a33d615c522700b3b50e0d6 146961 STS.input.images.txt
[sts/variants/yan-soares_tokenization/sts16]
ebbffced7d4630755e61d4dfe4d82121198965a14b9f5734b5abedb961f0725c 151640 STS.input.answer-answer.txt
705c3e82fb85fa3b6706a481b790e1030304ddc9c72d39e126693ed44b258ba6 149506 STS.input.headlines.txt
dd4ca54d1dfcd7d1cabe67f0de98cde23f4c1696ecc0003afbecae1274305d63 206994 STS.input.plagiarism.txt
9b455d8da1d1bae692d038da1d431827d23bfec04c64b109efc3b6b620fd422f 808635 STS.input.postediting.txt
58920c7da7dbc1b860609310782d88b7457d599c90a226819b5880262dd7f58a 167903 STS.input.question-question.txt
[train/leipzig_eng_wikipedia_2016_10K]
4e34584479f5082c65080fdd36decafb05651b46e475312e3c52218950b1f161 1340755 eng_wikipedia_2016_10K-sentences.txt
8c1813e5f4ce7b8361f6dfb8ec44044d8c470674458bf189c6b0a51b2644107d 1290812 eng_wikipedia_2016_10K.sent.txt
[train/nltk/abc]
9f448f15628cfe1ffbc600403b91516e7c6b9cb5a4262d11b8d3fc0f89b228ac 3997573 abc.sent.txt
[train/nltk/abc/original]
7e33b719e74851381338c899b4cf1cec2d1fe2abd95ded44d1c7cf2c10ce40e3 1808033 rural.txt
ada4fa0e81b7311042dfb2266e32e0990270b59cf156ca127b97ed44452005a9 2230247 science.txt
[train/nltk/brown]
ef2dc86dd0c0ddceed502aa1f67e6098cf97fb41c29178da11efeb07f8666f31 5899819 brown.sent.txt
9b275f9b3b95d7bd66ccfb7cd259f445a13bbe5d1f4107aba09fd3e8364bafa6 3314357 brown.zip
[train/nltk/europarl_raw_en]
1a50dbbab203ea949bdf53a678892d0726ae5a4a7ec7491266fa28b6cb6ea5c1 2946204 europarl_en.sent.txt
[train/nltk/europarl_raw_en/original]
6e61c44d10f297879206e3fcc89ec570c6893d5028944328e5847cecea47134f 146699 ep-00-01-17.en
2a5d066c70ad2ebc64660d9d8f36f197167255ed2ad88f660be18c89c1292436 558251 ep-00-01-18.en
0169ccd26cee782f155a17aa0cef06697ce00e5b42eba6ed3ce743b9a9f07b50 229610 ep-00-01-19.en
392be78e91d22fe417d53bc82699cff3efaa8732b083964c24dee6e81850b177 570 ep-00-01-21.en
4e991f91a557a5cacc1ff267f73b2d86e2351b39d118a41483ba0bbf384abbd5 317018 ep-00-02-02.en
e6fbb514a3c400f96521dfe1034dc36a3cfc293a8fc299a9b2859d3f6d9b311a 148826 ep-00-02-03.en
2fae030d5ddf144bbbad2b1ded40550d5485cd8290cf8002239486d9b86276c5 171620 ep-00-02-14.en
670ea978da31d8e93af2ca6a71161d2b5f4b504bfbf118d24ff29b9d1e4a0605 569950 ep-00-02-15.en
68126880d256b0d067e90ef1a67773552e05bce0f8dc21e128a7c1cbdcb2e9e2 543304 ep-00-02-16.en
533e29bd44c4a90794e786bea50fc3116352f4c77246b468143ba2ed2ea2e1fb 374591 ep-00-02-17.en
[train/nltk/gutenberg]
8d28e734a99bb7e07cb154e96bb73f83448adc926622ddc6f34af0aa1e03fc24 5529950 gutenberg_prose.sent.txt
[train/nltk/gutenberg/original]
71b0923d75fcf2f1faa897b22da8de8e2476d7478a2b22388eb58a3420e00215 887071 austen-emma.txt
cec097657cbfeb62aafe178973f514fa07ab66a5e28ea025ebd5d51ca870e40f 466292 austen-persuasion.txt
57b169c7cfa502896dee25bd66616f61cc1d21084caf31f015176ee46fda9718 673022 austen-sense.txt
5d86761f8609a6501c0bf9c00e4dd7e391681eb179bcb3bd61c43b5aa0f53b68 243901 bryant-stories.txt
d3e237c6e895644b573dd47b0b35a6474ed559e1d0a0fd2ed525b95087c17d5b 82992 burgess-busterbrown.txt
5ce9042c0d8536b072b61d4c7c4e6d70c72d9dbb5f3d816261326d9280749266 144395 carroll-alice.txt
c6b6d4e8c09a3f49a09f37f4e47663d4d6f048b62d86c70ccafdfd8f27059a58 457450 chesterton-ball.txt
67027976205b4b30e367c704807f56c8ffac3e8ea6037d993e57ab1fe28447ec 406629 chesterton-brown.txt
8b431a2a8db84089cd6f83fa66610c3b12c04114609df6e90137c0c58f2c5493 320525 chesterton-thursday.txt
d36ac7a257467d242e1c3e3ae98d054853109873aa0899db25d045af619ad6f6 916861 edgeworth-parents.txt
ff7424f923506564f5806983c046be4b60f50edcd48d327abf795dabb5eaa7f7 1220066 melville-moby_dick.txt
[train/nltk/inaugural]
14d975f03bdbb8ffc1c3bad8f0d9b6f25db052dc14f8fae3b8caef42830cb010 768360 inaugural.sent.txt
7c5fb5793e31fbeae12bf1aa0ffda5336468f07cedb50654c6d31ca384e2046b 346476 inaugural.zip
[train/nltk/state_union]
00f45dacaf920d7563a9b0f33e47622f1f4fab7c5b300420bc4942da98f1b661 2031579 state_union.sent.txt
366c1dc82b2abf896f42b2ec50ba802a0141a29f75d29ca48a7a243ce5bfbe8d 808757 state_union.zip
[train/wiki]
e8b96b77ffcd3226cbddb6e9eb1185bcefee7118d6281792970a5e7a31432c42 1280000 wiki1m_for_simcse.head.txt
[train/wikitext2]
4f3e427e4aff23acff917a8a51aeae21bf12832256e26914c8fc250dcef4103c 1290547 wiki.test.raw
adb225ca0c361b175fe932b09b4b03392004cf9f684485ea7fe67c53a0df6243 1212112 wikitext2_test.sent.txt
[transfer/CR]
ec94532766f6f962094841ab3bee2ad6f232f996c3756825a91e78bcc294750f 142650 custrev.neg
91a20a4ffeb5d38a39a4087bb247e16538aff21e7d621ae59738379f39f21732 228014 custrev.pos
[transfer/MPQA]
8da6e035fa4cea02f0555091096b29a6b3995ff0adf41fad25008dcee066b79e 158902 mpqa.neg
7487dbb74c77383e60b292845495163a9e21fb70a4fdacdda933413e43163f0d 60581 mpqa.pos
[transfer/MR]
c4ac36eaa8adc8ee31c31f69594bfbe68d83ef5b6db53f1f19b28c0be52f3999 616109 rt-polarity.neg
34e5b0da2d491e46b700b00afe735aaae0962bcfe4f7f22b2d8077e714fa370f 629795 rt-polarity.pos
[transfer/MRPC]
a04e271090879aaba6423d65b94950c089298587d9c084bf9cd7439bd785f784 441275 msr_paraphrase_test.txt
60a9b09084528f0673eedee2b69cb941920f0b8cd0eeccefc464a98768457f89 1047044 msr_paraphrase_train.txt
[transfer/SST/binary]
9a6c7403b71a9b762158387afe4431253ae10cdfb2319b5275289f3766f48291 94916 sentiment-dev
4fefd1cd67526cf87ebc7fafc3afc21cc7cfa6ae53b45e74f77f9456e3c62752 194788 sentiment-test
10a92a297ec38e262386e5a2713b4bc70e5d18ced88b7f54bd171a26e5b34ab5 3806066 sentiment-train
[transfer/SST/fine]
b2f76c62b960f9fda5c6d751edb125abab4f878eb94a8754239b7f4af647f4c3 117239 sentiment-dev
0e2ebb450c231f7b3d67fc932066e7bb26ae7bad8c88488f45ed44ef02eb3c73 233634 sentiment-test
9b52b5f686ed438d4d0274c385369251b3d579b578fddd340ba8a9bae2ca4bee 902818 sentiment-train
[transfer/SUBJ]
d8ccd43f1674f1c17e4ab717564e3561cfb719b0db4cfb19e5677427c68ff8a1 672430 subj.objective
274c2ffe59c204dc4df779848561786f59a98cc20dda3cfdd7d9f76a4f730710 634654 subj.subjective
[transfer/TREC]
86ad53c8fc9d397ab2f4be7c967d8efb470b260140557d3e57afad69d1b88b76 23269 TREC_10.label
8bd6e79493f43bbd22c364587366a1dced54e1e31259eaa92721a0f526031116 333379 train_5500.label
"""

_RAW = "https://raw.githubusercontent.com"
_SYNWMD = f"{_RAW}/amao0o0/SynWMD/4ad176952dd17f66c96a206d9fdbb6ff52658380/data/downstream"
_YAN = f"{_RAW}/yan-soares/research_embeddings_fine_tuning/607d7023abf709562d90ea987eaf6005625a82f7/data"
_BRMSON = f"{_RAW}/brmson/dataset-sts/e1d3375/data/sts/sick2014"  # short SHA: not resolvable offline
_PROMPT_BERT = f"{_RAW}/archfool/Prompt-BERT/d3c942a1453c2b47d8c306ac8597a022d8c91512/data"
_WIKI_HEAD = (
    f"{_RAW}/SadiaAfrinPurba/bert-vae-cnn-for-sentence-similarity/6c691f128c9b9b66a3c07e9377b908e97ff8b122"
    "/data/wiki1m_for_simcse.txt"
)
# Where the official zips of each STS year unpack, inside SentEval's STS1x-en-test folders.
_STS_RAW_DIRS = {
    "sts12": "test-gold",
    "sts13": "test-gs",
    "sts14": "sts-en-test-gs-2014",
    "sts15": "test_evaluation_task2a",
    "sts16": "sts2016-english-with-gs-v1.0",
}
_TRANSFER_TASKS = {"MR": "mr", "CR": "cr", "SUBJ": "subj", "MPQA": "mpqa", "TREC": "trec", "MRPC": "mrpc"}
_VARIANT_DIR = "sts/variants/yan-soares_tokenization"
_VARIANT_NAME = "yan-soares tokenization"


@dataclass(frozen=True)
class ManifestEntry:
    """One known file. ``path`` is relative to the data root, with ``/`` separators."""

    path: str
    sha256: str
    size: int
    group: str
    task: str | None = None  # the task that reads this file; None for provenance-only files
    required: bool = False  # the task cannot run without it
    url: str | None = None  # public download URL at a pinned commit
    variants: Mapping[str, str] = field(default_factory=dict, hash=False)  # other sha256 -> variant name


def _classify(path: str) -> tuple[str, str | None, bool, str | None]:
    """(group, task, required, url) of a path, following the data README's layout and sources table."""
    parts = PurePosixPath(path).parts
    name = parts[-1]
    if parts[0] == "sts" and parts[1] == "variants":
        year = parts[-2]
        return "sts-variants", None, False, f"{_YAN}/downstream/STS/{year.upper()}-en-test/{name}"
    if parts[0] == "sts":
        task = parts[1]
        raw = len(parts) == 4 and parts[2] == "raw"
        if task in _STS_RAW_DIRS:
            folder = f"{_SYNWMD}/STS/{task.upper()}-en-test"
            if raw:
                return "sts-raw", None, False, f"{folder}/{_STS_RAW_DIRS[task]}/{name}"
            return "sts", task, name.startswith(("STS.input.", "STS.gs.")), f"{folder}/{name}"
        if task == "stsb":
            if raw:
                return "sts-raw", None, False, f"{_SYNWMD}/STS/STSBenchmark/stsbenchmark/{name}"
            return "sts", "stsb", name.endswith(".csv"), f"{_SYNWMD}/STS/STSBenchmark/{name}"
        if task == "sickr":
            if raw:
                return "sts-raw", None, False, f"{_BRMSON}/{name}"
            return "sts", "sickr", name.startswith("SICK_"), f"{_YAN}/downstream/SICK/{name}"
    if parts[0] == "transfer":
        rest = "/".join(parts[1:])
        if parts[1] == "SST":
            task = "sst2" if parts[2] == "binary" else "sst5"
        else:
            task = _TRANSFER_TASKS[parts[1]]
        return "transfer", task, True, f"{_YAN}/downstream/{rest}"
    if parts[:2] == ("nli", "senteval_snli"):
        return "nli", "snli", True, f"{_YAN}/downstream/SNLI/{name}"
    if path == "nli/nli_for_simcse.sample.csv":
        return "nli", "nli-sample", True, f"{_PROMPT_BERT}/nli_for_simcse.csv"
    if path == "train/wiki/wiki1m_for_simcse.head.txt":
        return "wiki", "wiki1m-head", True, _WIKI_HEAD
    if parts[0] == "train":
        derived = name.endswith(".sent.txt")
        return "train-extra", "train-extra" if derived else None, derived, None
    raise ValueError(f"manifest path outside the known layout: {path}")


def _parse_table(table: str) -> list[tuple[str, str, int]]:
    rows, folder = [], ""
    for line in table.splitlines():
        if line.startswith("["):
            folder = line.strip("[]")
        elif line.strip():
            sha, size, name = line.split(maxsplit=2)
            rows.append((f"{folder}/{name}", sha, int(size)))
    return rows


@cache
def default_manifest() -> tuple[ManifestEntry, ...]:
    """Every file of the reference data directory, sorted by path."""
    rows = _parse_table(_TABLE)
    variant_sha = {p: sha for p, sha, _ in rows if p.startswith(_VARIANT_DIR + "/")}
    entries = []
    for path, sha, size in sorted(rows):
        group, task, required, url = _classify(path)
        if task is not None and task.startswith("sts1") and PurePosixPath(path).name.startswith("STS.gs."):
            # gold files are needed only for sub-datasets whose input exists (not ALL, not STS13 SMT)
            sub = PurePosixPath(path).name.removeprefix("STS.gs.")
            required = any(p == f"sts/{task}/STS.input.{sub}" for p, _, _ in rows)
        variants: dict[str, str] = {}
        if group == "sts":
            alt = variant_sha.get(f"{_VARIANT_DIR}/{task}/{PurePosixPath(path).name}")
            if alt is not None and alt != sha:
                variants[alt] = _VARIANT_NAME
        entries.append(ManifestEntry(path, sha, size, group, task, required, url, variants))
    return tuple(entries)


def select_entries(names: Iterable[str] | None, manifest: Sequence[ManifestEntry] | None = None) -> list[ManifestEntry]:
    """Entries whose group or task is in ``names`` (``None`` or ``"all"``: every entry; ``"train"``:
    the ``wiki`` and ``train-extra`` groups)."""
    manifest = default_manifest() if manifest is None else manifest
    if names is None:
        return list(manifest)
    wanted = {names} if isinstance(names, str) else set(names)
    if "all" in wanted:
        return list(manifest)
    for alias, groups in ALIASES.items():
        if alias in wanted:
            wanted |= set(groups)
    known = {e.group for e in manifest} | {e.task for e in manifest if e.task} | set(ALIASES)
    unknown = sorted(wanted - known)
    if unknown:
        raise CsrlError(
            f"unknown data group or task: {', '.join(unknown)}",
            hint=f"choose from: all, {', '.join(sorted(known))}",
        )
    return [e for e in manifest if e.group in wanted or e.task in wanted]


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


Status = Literal["ok", "variant", "unrecognised", "missing"]


@dataclass(frozen=True)
class FileStatus:
    entry: ManifestEntry
    status: Status
    detail: str = ""  # the variant's name, or what was found instead


@dataclass(frozen=True)
class CheckReport:
    """Result of :func:`check_data_dir`. ``ok``: no required file of the checked tasks is missing."""

    root: Path
    files: tuple[FileStatus, ...]

    @property
    def ok(self) -> bool:
        return not any(f.status == "missing" and f.entry.required for f in self.files)

    def missing_required(self) -> dict[str, list[str]]:
        """Task -> relative paths of its missing required files (only tasks with some missing)."""
        out: dict[str, list[str]] = {}
        for f in self.files:
            if f.status == "missing" and f.entry.required and f.entry.task:
                out.setdefault(f.entry.task, []).append(f.entry.path)
        return out

    @property
    def runnable_tasks(self) -> tuple[str, ...]:
        """Tasks whose required files are all present (an unrecognised hash counts as present)."""
        blocked = self.missing_required()
        tasks = dict.fromkeys(f.entry.task for f in self.files if f.entry.task)
        return tuple(t for t in tasks if t is not None and t not in blocked)

    def count(self, status: Status) -> int:
        return sum(f.status == status for f in self.files)

    def to_text(self) -> str:
        lines = [
            f"data directory {self.root}: {self.count('ok')} ok, {self.count('variant')} known variant(s), "
            f"{self.count('unrecognised')} unrecognised, {self.count('missing')} missing "
            f"(of {len(self.files)} checked)"
        ]
        blocked = self.missing_required()
        if self.runnable_tasks:
            lines.append("runnable: " + ", ".join(self.runnable_tasks))
        for task, paths in blocked.items():
            lines.append(
                f"NOT runnable: {task} (missing {len(paths)}: {', '.join(paths[:4])}"
                + (", ..." if len(paths) > 4 else "")
                + ")"
            )
        for f in self.files:
            if f.status == "variant":
                lines.append(f"note: {f.entry.path} is the {f.detail} variant")
            elif f.status == "unrecognised":
                lines.append(f"warning: {f.entry.path} has unexpected content ({f.detail}); results may differ")
        optional = [f.entry.path for f in self.files if f.status == "missing" and not f.entry.required]
        if optional:
            lines.append(f"{len(optional)} optional file(s) missing (readmes, raw releases, variants)")
        if not self.ok:
            lines.append(
                "to fix: download the missing files with `csrl data fetch --groups ...` (fetch() in Python; "
                "--base-url for a mirror), or point --data-dir / CSRL_DATA_DIR at a complete copy"
            )
        return "\n".join(lines)


def _check_file(root: Path, entry: ManifestEntry) -> FileStatus:
    p = root / entry.path
    if not p.is_file():
        return FileStatus(entry, "missing")
    size = p.stat().st_size
    if size != entry.size and not entry.variants:  # no hashing needed to know it differs
        return FileStatus(entry, "unrecognised", f"{size} bytes, expected {entry.size}")
    digest = sha256_file(p)
    if digest == entry.sha256:
        return FileStatus(entry, "ok")
    if digest in entry.variants:
        return FileStatus(entry, "variant", entry.variants[digest])
    return FileStatus(entry, "unrecognised", f"sha256 {digest[:12]}..., expected {entry.sha256[:12]}...")


def check_data_dir(
    root: Path | str, *, tasks: Iterable[str] | None = None, manifest: Sequence[ManifestEntry] | None = None
) -> CheckReport:
    """Check the known files under ``root`` (hashing each present one; ~77 MB in well under a second).

    ``tasks`` limits the check to groups or tasks (e.g. ``("sts",)`` or ``("stsb", "sickr")``); files
    under ``root`` that the manifest does not know are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise CsrlError(
            f"data directory not found: {root}",
            hint="pass --data-dir or set CSRL_DATA_DIR to the data root, or download it with fetch()",
        )
    entries = select_entries(tasks, manifest)
    return CheckReport(root, tuple(_check_file(root, e) for e in entries))
