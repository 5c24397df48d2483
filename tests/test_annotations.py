"""Annotation parsers on tiny hand-made files: exact entries, classes and missing reports for every
dataset, plus the malformed inputs each parser must name (file, line, what is wrong)."""

import os

import pytest

from avssl.data_prep import annotations
from avssl.data_prep.annotations import Entry


def touch(root, *names):
  for name in names:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'')


def write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return str(path)


def ids(result):
  return [entry.video_id for entry in result.entries]


# folder


def test_folder_flat_keeps_ids_that_end_in_mp4_letters(tmp_path):
  touch(tmp_path, 'map4.mp4', 'b.MKV', 'a.wav', 'notes.txt', '.DS_Store')
  result = annotations.folder(str(tmp_path))
  assert result.entries == [
      Entry('a', str(tmp_path / 'a.wav'), 'train'),
      Entry('b', str(tmp_path / 'b.MKV'), 'train'),
      Entry('map4', str(tmp_path / 'map4.mp4'), 'train'),
  ]
  assert result.classes == []
  assert len(result.missing) == 2
  assert result.missing[0] == ('.DS_Store', 'hidden (the name starts with ".")')
  assert result.missing[1][0] == 'notes.txt'
  assert result.missing[1][1].startswith("not a media file: extension '.txt'")


def test_folder_class_subfolders(tmp_path):
  touch(tmp_path, 'dog/y.avi', 'cat/x.mp4', 'cat/deeper/z.mp4', 'loose.mp4', 'empty/.keep')
  result = annotations.folder(str(tmp_path), extensions=('mp4', '.AVI'))
  assert result.classes == ['cat', 'dog', 'empty']
  assert result.entries == [
      Entry('cat/x', str(tmp_path / 'cat/x.mp4'), 'train', 0, 'cat'),
      Entry('dog/y', str(tmp_path / 'dog/y.avi'), 'train', 1, 'dog'),
  ]
  assert result.missing == [('loose.mp4', 'not inside a class folder'),
                            ('cat/deeper', 'nested folder not scanned'),
                            ('empty/.keep', 'hidden (the name starts with ".")')]


def test_folder_split_and_class_subfolders(tmp_path):
  touch(tmp_path, 'train/cat/a.mp4', 'train/cat/a.wav', 'train/dog/map4.mp4', 'val/dog/c.mp4',
        'test/bird/d.mp4', 'README.md')
  result = annotations.folder(str(tmp_path))
  assert result.classes == ['bird', 'cat', 'dog']
  assert result.entries == [
      Entry('train/cat/a', str(tmp_path / 'train/cat/a.mp4'), 'train', 1, 'cat'),
      Entry('train/dog/map4', str(tmp_path / 'train/dog/map4.mp4'), 'train', 2, 'dog'),
      Entry('val/dog/c', str(tmp_path / 'val/dog/c.mp4'), 'val', 2, 'dog'),
      Entry('test/bird/d', str(tmp_path / 'test/bird/d.mp4'), 'test', 0, 'bird'),
  ]
  assert result.missing == [('README.md', 'outside the train/val/test folders'),
                            ('train/cat/a', 'duplicate video_id')]
  assert ids(annotations.folder(str(tmp_path), split='val')) == ['val/dog/c']


def test_folder_split_folders_without_classes(tmp_path):
  touch(tmp_path, 'train/a.mp4', 'test/b.mp4')
  result = annotations.folder(str(tmp_path))
  assert result.entries == [Entry('train/a', str(tmp_path / 'train/a.mp4'), 'train'),
                            Entry('test/b', str(tmp_path / 'test/b.mp4'), 'test')]
  assert result.classes == [] and result.missing == []


def test_folder_rejects_a_missing_root_and_a_bad_split(tmp_path):
  with pytest.raises(FileNotFoundError, match='root .*nope is not a directory'):
    annotations.folder(str(tmp_path / 'nope'))
  with pytest.raises(ValueError, match="split must be one of .* got 'validation'"):
    annotations.folder(str(tmp_path), split='validation')


# VGG-Sound

VGGSOUND_CSV = '''\
-0jeONf82dE,21,dog barking,train
"abc",30,"dog bow-wowing, growling",test
-0jeONf82dE,21,dog barking,test
zzz,0,people marching,train
gone,5,people marching,train
'''


def test_vggsound(tmp_path):
  csv_path = write(tmp_path / 'vggsound.csv', VGGSOUND_CSV)
  touch(tmp_path / 'v', '-0jeONf82dE_000021.mp4', 'abc_000030.mp4', 'zzz_000000.mp4')
  result = annotations.vggsound(csv_path, str(tmp_path / 'v'))
  assert result.classes == ['dog barking', 'dog bow-wowing, growling', 'people marching']
  video = str(tmp_path / 'v')
  assert result.entries == [
      Entry('-0jeONf82dE_21', f'{video}/-0jeONf82dE_000021.mp4', 'train', 0, 'dog barking'),
      Entry('zzz_0', f'{video}/zzz_000000.mp4', 'train', 2, 'people marching'),
      Entry('abc_30', f'{video}/abc_000030.mp4', 'test', 1, 'dog bow-wowing, growling'),
  ]
  assert result.missing == [('-0jeONf82dE_21', 'duplicate video_id'),
                            ('gone_5', f'file not found: {video}/gone_000005.mp4')]
  test_only = annotations.vggsound(csv_path, video, split='test')
  assert ids(test_only) == ['abc_30'] and test_only.classes == result.classes


def test_vggsound_reference_file_pattern(tmp_path):
  csv_path = write(tmp_path / 'vggsound.csv', 'abc,30,cat purring,train\n')
  touch(tmp_path, 'train/abc_30_40.mp4')
  result = annotations.vggsound(csv_path, str(tmp_path), file_pattern='{split}/{ytid}_{start}_{end}.mp4')
  assert result.entries == [Entry('abc_30', str(tmp_path / 'train/abc_30_40.mp4'), 'train', 0, 'cat purring')]


@pytest.mark.parametrize('line, message', [
    ('abc,30,cat purring', r'vggsound.csv:2: expected 4 fields'),
    ('abc,x,cat purring,train', r"vggsound.csv:2: start_seconds must be a number, got 'x'"),
    ('abc,1,cat purring,val', r"vggsound.csv:2: split must be 'train' or 'test', got 'val'"),
])
def test_vggsound_malformed_line(tmp_path, line, message):
  csv_path = write(tmp_path / 'vggsound.csv', f'ok,1,cat purring,train\n{line}\n')
  with pytest.raises(ValueError, match=message):
    annotations.vggsound(csv_path, str(tmp_path))


def test_vggsound_pattern_with_unknown_field(tmp_path):
  csv_path = write(tmp_path / 'vggsound.csv', 'abc,30,cat purring,train\n')
  with pytest.raises(ValueError, match=r'vggsound.csv:1: file_pattern .* uses \{youtube_id\}'):
    annotations.vggsound(csv_path, str(tmp_path), file_pattern='{youtube_id}.mp4')


# Kinetics

KINETICS_CSV = '''\
label,youtube_id,time_start,time_end,split,is_cc
abseiling,aaa,10,20,train,0
playing guitar,bbb,0,10,validate,0
playing guitar,ccc,5,15,train,0
abseiling,ddd,1,11,train,0
'''


def test_kinetics400_with_labels_and_an_unlabelled_test_csv(tmp_path):
  train = write(tmp_path / 'train.csv', KINETICS_CSV)
  test = write(tmp_path / 'test.csv', 'youtube_id,time_start,time_end,split\neee,3,13,test\n')
  touch(tmp_path / 'k', 'train/abseiling/aaa_000010_000020.mp4', 'val/playing guitar/bbb_000000_000010.mp4',
        'train/playing guitar/ccc_000005_000015.mp4', 'test/eee_000003_000013.mp4')
  video = str(tmp_path / 'k')
  result = annotations.kinetics400(train, video)
  assert result.classes == ['abseiling', 'playing guitar']
  assert result.entries == [
      Entry('aaa_000010_000020', f'{video}/train/abseiling/aaa_000010_000020.mp4', 'train', 0, 'abseiling'),
      Entry('ccc_000005_000015', f'{video}/train/playing guitar/ccc_000005_000015.mp4', 'train', 1,
            'playing guitar'),
      Entry('bbb_000000_000010', f'{video}/val/playing guitar/bbb_000000_000010.mp4', 'val', 1,
            'playing guitar'),
  ]
  assert result.missing == [
      ('ddd_000001_000011', f'file not found: {video}/train/abseiling/ddd_000001_000011.mp4')]
  with pytest.raises(ValueError, match=r'test.csv:2: file_pattern .* uses \{label\}'):
    annotations.kinetics400([train, test], video)
  both = annotations.kinetics400([train, test], video, split='test',
                                 file_pattern='{split}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4')
  assert both.classes == ['abseiling', 'playing guitar']
  assert both.entries == [Entry('eee_000003_000013', f'{video}/test/eee_000003_000013.mp4', 'test')]
  assert both.missing == []


def test_kinetics400_malformed(tmp_path):
  bad_time = write(tmp_path / 'a.csv', 'label,youtube_id,time_start,time_end,split\nx,aaa,1.5,11,train\n')
  with pytest.raises(ValueError, match=r"a.csv:2: time_start must be a whole number, got '1.5'"):
    annotations.kinetics400(bad_time, str(tmp_path))
  bad_header = write(tmp_path / 'b.csv', 'label,id,time_start,time_end,split\nx,aaa,1,11,train\n')
  with pytest.raises(ValueError, match=r"b.csv:1: header .* lacks the columns \['youtube_id'\]"):
    annotations.kinetics400(bad_header, str(tmp_path))
  short = write(tmp_path / 'c.csv', 'label,youtube_id,time_start,time_end,split\nx,aaa,1,11\n')
  with pytest.raises(ValueError, match=r'c.csv:2: expected 5 fields like the header, got 4'):
    annotations.kinetics400(short, str(tmp_path))
  with pytest.raises(FileNotFoundError, match='Kinetics CSV .*absent.csv does not exist'):
    annotations.kinetics400(str(tmp_path / 'absent.csv'), str(tmp_path))


def test_kinetics_sound_reindexes_the_32_classes(tmp_path):
  assert len(annotations.KINETICS_SOUND_CLASSES) == 32
  assert len(set(annotations.KINETICS_SOUND_CLASSES)) == 32
  classes = sorted(annotations.KINETICS_SOUND_CLASSES)
  rows = ['label,youtube_id,time_start,time_end,split', 'abseiling,zzz,0,10,train']
  rows += [f'{name.replace(" ", "_")},v{i:02d},0,10,train' for i, name in enumerate(classes)]
  csv_path = write(tmp_path / 'train.csv', '\n'.join(rows) + '\n')
  touch(tmp_path, 'zzz.mp4', *[f'v{i:02d}.mp4' for i in range(1, 32)])
  result = annotations.kinetics_sound(csv_path, str(tmp_path), file_pattern='{youtube_id}.mp4')
  assert result.classes == classes
  assert result.entries == [
      Entry(f'v{i:02d}_000000_000010', str(tmp_path / f'v{i:02d}.mp4'), 'train', i, name)
      for i, name in enumerate(classes) if i]
  assert result.missing == [('v00_000000_000010', f'file not found: {tmp_path}/v00.mp4')]
  underscored = annotations.kinetics_sound(csv_path, str(tmp_path), file_pattern='{label_underscored}.mp4')
  assert underscored.entries == []
  assert underscored.missing[0] == ('v00_000000_000010', f'file not found: {tmp_path}/blowing_nose.mp4')


def test_kinetics_sound_needs_labels_and_every_class(tmp_path):
  partial = write(tmp_path / 'a.csv', 'label,youtube_id,time_start,time_end,split\nbowling,aaa,0,10,train\n')
  with pytest.raises(ValueError, match=r"Kinetics-Sound classes \['blowing nose', 'blowing out candles'"):
    annotations.kinetics_sound(partial, str(tmp_path))
  test = write(tmp_path / 'test.csv', 'youtube_id,time_start,time_end,split\neee,3,13,test\n')
  with pytest.raises(ValueError, match='test.csv:2: no label; Kinetics-Sound selects clips by label'):
    annotations.kinetics_sound(test, str(tmp_path))


# AVE

AVE_ANNOTATIONS = '''\
Category&VideoID&Quality&StartTime&EndTime
Church bell&RUhOCu3LNXM&good&0&10
Male speech, man speaking&-hChcJAh5N0&good&5&10
Bark&3jS8tWfLJxI&good&7&9
Bark&-hChcJAh5N0&good&0&3
Bark&gone&good&0&10
'''


def test_ave(tmp_path):
  annotations_path = write(tmp_path / 'Annotations.txt', AVE_ANNOTATIONS)
  write(tmp_path / 'trainSet.txt', 'Church bell&RUhOCu3LNXM&good&0&10\nBark&-hChcJAh5N0&good&0&3\n'
        'Bark&gone&good&0&10\n')
  write(tmp_path / 'valSet.txt', 'Male speech, man speaking&-hChcJAh5N0&good&5&10\n')
  write(tmp_path / 'testSet.txt', 'Category&VideoID&Quality&StartTime&EndTime\nBark&3jS8tWfLJxI&good&7&9\n'
        'Church bell&RUhOCu3LNXM&good&0&10\n')
  touch(tmp_path / 'v', 'RUhOCu3LNXM.mp4', '-hChcJAh5N0.mp4', '3jS8tWfLJxI.mp4')
  video = str(tmp_path / 'v')
  result = annotations.ave(annotations_path, video)
  assert result.classes == ['Bark', 'Church bell', 'Male speech, man speaking']
  assert result.entries == [
      Entry('-hChcJAh5N0_0_3', f'{video}/-hChcJAh5N0.mp4', 'train', 0, 'Bark', 0.0, 3.0),
      Entry('RUhOCu3LNXM_0_10', f'{video}/RUhOCu3LNXM.mp4', 'train', 1, 'Church bell', 0.0, 10.0),
      Entry('-hChcJAh5N0_5_10', f'{video}/-hChcJAh5N0.mp4', 'val', 2, 'Male speech, man speaking', 5.0, 10.0),
      Entry('3jS8tWfLJxI_7_9', f'{video}/3jS8tWfLJxI.mp4', 'test', 0, 'Bark', 7.0, 9.0),
  ]
  assert result.missing == [('gone_0_10', f'file not found: {video}/gone.mp4'),
                            ('RUhOCu3LNXM_0_10', 'duplicate video_id')]
  assert ids(annotations.ave(annotations_path, video, split_dir=str(tmp_path), split='val')) == [
      '-hChcJAh5N0_5_10']


def test_ave_malformed(tmp_path):
  annotations_path = write(tmp_path / 'Annotations.txt', 'Bark&abc&good&0&10\n')
  write(tmp_path / 'trainSet.txt', 'Bark&abc&good&0&10\nBark&abc&good&0\n')
  with pytest.raises(ValueError, match=r'trainSet.txt:2: expected 5 fields .* got 4'):
    annotations.ave(annotations_path, str(tmp_path))
  write(tmp_path / 'trainSet.txt', 'Meow&abc&good&0&10\n')
  with pytest.raises(ValueError, match=r"trainSet.txt:1: category 'Meow' does not occur in"):
    annotations.ave(annotations_path, str(tmp_path))
  write(tmp_path / 'trainSet.txt', 'Bark&abc&good&8&2\n')
  with pytest.raises(ValueError, match=r'trainSet.txt:1: expected .* 0 <= StartTime <= EndTime'):
    annotations.ave(annotations_path, str(tmp_path))
  write(tmp_path / 'trainSet.txt', 'Bark&abc&good&0&10\n')
  with pytest.raises(FileNotFoundError, match='AVE annotation file .*valSet.txt does not exist'):
    annotations.ave(annotations_path, str(tmp_path))


# UCF-101


def ucf_lists(tmp_path):
  split_dir = tmp_path / 'ucfTrainTestlist'
  write(split_dir / 'classInd.txt', '1 ApplyEyeMakeup\r\n2 Archery\r\n')
  write(split_dir / 'trainlist01.txt', 'ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n'
        'Archery/v_Archery_g08_c01.avi 2\r\nArchery/v_Archery_g09_c01.avi 2\r\n')
  write(split_dir / 'testlist01.txt', 'ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\r\n')
  write(split_dir / 'trainlist03.txt', 'ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\n')
  write(split_dir / 'testlist03.txt', 'Archery/v_Archery_g08_c01.avi\nArchery/v_Archery_g08_c01.avi\n')
  touch(tmp_path / 'UCF-101', 'ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi',
        'ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi', 'Archery/v_Archery_g08_c01.avi')
  return str(split_dir), str(tmp_path / 'UCF-101')


def test_ucf101_folds_1_and_3(tmp_path):
  split_dir, video = ucf_lists(tmp_path)
  fold1 = annotations.ucf101(split_dir, video)
  assert fold1.classes == ['ApplyEyeMakeup', 'Archery']
  assert fold1.entries == [
      Entry('ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01', f'{video}/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi',
            'train', 0, 'ApplyEyeMakeup', fold=1),
      Entry('Archery/v_Archery_g08_c01', f'{video}/Archery/v_Archery_g08_c01.avi', 'train', 1, 'Archery',
            fold=1),
      Entry('ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01', f'{video}/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi',
            'test', 0, 'ApplyEyeMakeup', fold=1),
  ]
  assert fold1.missing == [
      ('Archery/v_Archery_g09_c01', f'file not found: {video}/Archery/v_Archery_g09_c01.avi')]
  fold3 = annotations.parse('ucf101', split_dir=split_dir, video_dir=video, fold=3)
  assert fold3.entries == [
      Entry('ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01', f'{video}/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi',
            'train', 0, 'ApplyEyeMakeup', fold=3),
      Entry('Archery/v_Archery_g08_c01', f'{video}/Archery/v_Archery_g08_c01.avi', 'test', 1, 'Archery',
            fold=3),
  ]
  assert fold3.missing == [('Archery/v_Archery_g08_c01', 'duplicate video_id')]


def test_ucf101_malformed(tmp_path):
  split_dir, video = ucf_lists(tmp_path)
  with pytest.raises(ValueError, match='fold must be 1..3, got 4'):
    annotations.ucf101(split_dir, video, fold=4)
  write(tmp_path / 'ucfTrainTestlist/trainlist01.txt', 'Archery/v_Archery_g08_c01.avi 1\n')
  with pytest.raises(ValueError, match=r"trainlist01.txt:1: class number 1 is not that of 'Archery'"):
    annotations.ucf101(split_dir, video)
  write(tmp_path / 'ucfTrainTestlist/trainlist01.txt', 'Fencing/v_Fencing_g08_c01.avi 1\n')
  with pytest.raises(ValueError, match=r"trainlist01.txt:1: 'Fencing/v_Fencing_g08_c01.avi' is not"):
    annotations.ucf101(split_dir, video)
  write(tmp_path / 'ucfTrainTestlist/classInd.txt', '1 ApplyEyeMakeup\n3 Archery\n')
  with pytest.raises(ValueError, match=r'classInd.txt: class numbers must be 1..2, got \[1, 3\]'):
    annotations.ucf101(split_dir, video)


# HMDB-51


def test_hmdb51(tmp_path):
  split_dir = tmp_path / 'testTrainMulti_7030_splits'
  write(split_dir / 'sword_test_split1.txt', 'a_sword_u.avi 1 \nb_sword_u.avi 2 \nc_sword_u.avi 0 \n')
  write(split_dir / 'brush_hair_test_split1.txt', 'x_brush.avi 2 \ny_brush.avi 1 \n')
  write(split_dir / 'sword_test_split2.txt', 'a_sword_u.avi 2 \n')
  touch(tmp_path / 'hmdb51', 'sword/a_sword_u.avi', 'sword/b_sword_u.avi', 'sword/c_sword_u.avi',
        'brush_hair/x_brush.avi')
  video = str(tmp_path / 'hmdb51')
  result = annotations.hmdb51(str(split_dir), video, fold=1)
  assert result.classes == ['brush_hair', 'sword']
  assert result.entries == [
      Entry('sword/a_sword_u', f'{video}/sword/a_sword_u.avi', 'train', 1, 'sword', fold=1),
      Entry('brush_hair/x_brush', f'{video}/brush_hair/x_brush.avi', 'test', 0, 'brush_hair', fold=1),
      Entry('sword/b_sword_u', f'{video}/sword/b_sword_u.avi', 'test', 1, 'sword', fold=1),
  ]
  assert result.missing == [('brush_hair/y_brush', f'file not found: {video}/brush_hair/y_brush.avi')]
  fold2 = annotations.hmdb51(str(split_dir), video, fold=2)
  assert fold2.classes == ['sword'] and ids(fold2) == ['sword/a_sword_u']
  with pytest.raises(FileNotFoundError, match=r'has no \*_test_split3.txt files'):
    annotations.hmdb51(str(split_dir), video, fold=3)
  write(split_dir / 'sword_test_split2.txt', 'a_sword_u.avi 3\n')
  with pytest.raises(ValueError, match=r'sword_test_split2.txt:1: id must be 0 \(unused\), 1 \(train\) or 2'):
    annotations.hmdb51(str(split_dir), video, fold=2)


# ESC-50

ESC50_CSV = '''\
filename,fold,target,category,esc10,src_file,take
1-100032-A-0.wav,1,0,dog,True,100032,A
1-100038-A-14.wav,1,1,chirping_birds,False,100038,A
2-100648-A-0.wav,2,0,dog,True,100648,A
2-gone-A-1.wav,2,1,chirping_birds,False,1,A
'''


def test_esc50_with_and_without_a_test_fold(tmp_path):
  csv_path = write(tmp_path / 'meta/esc50.csv', ESC50_CSV)
  touch(tmp_path / 'audio', '1-100032-A-0.wav', '1-100038-A-14.wav', '2-100648-A-0.wav')
  audio = str(tmp_path / 'audio')
  gone = ('2-gone-A-1', f'file not found: {audio}/2-gone-A-1.wav')
  result = annotations.esc50(csv_path, audio, fold=2)
  assert result.classes == ['dog', 'chirping_birds']
  assert result.entries == [
      Entry('1-100032-A-0', f'{audio}/1-100032-A-0.wav', 'train', 0, 'dog', fold=1),
      Entry('1-100038-A-14', f'{audio}/1-100038-A-14.wav', 'train', 1, 'chirping_birds', fold=1),
      Entry('2-100648-A-0', f'{audio}/2-100648-A-0.wav', 'test', 0, 'dog', fold=2),
  ]
  assert result.missing == [gone]
  all_train = annotations.esc50(csv_path, audio)
  assert [(e.split, e.fold) for e in all_train.entries] == [('train', 1), ('train', 1), ('train', 2)]
  assert all_train.missing == [gone]
  with pytest.raises(ValueError, match=r'fold=3 is not one of the folds of .*esc50.csv: \[1, 2\]'):
    annotations.esc50(csv_path, audio, fold=3)


def test_esc50_malformed(tmp_path):
  audio = str(tmp_path)
  conflict = write(tmp_path / 'a.csv', ESC50_CSV + '3-1-A-0.wav,3,0,cat,False,1,A\n')
  with pytest.raises(ValueError, match=r"a.csv:6: target 0 is 'cat' here but 'dog' earlier"):
    annotations.esc50(conflict, audio)
  bad_fold = write(tmp_path / 'b.csv', ESC50_CSV + '3-1-A-0.wav,three,0,dog,False,1,A\n')
  with pytest.raises(ValueError, match=r"b.csv:6: fold must be a number, got 'three'"):
    annotations.esc50(bad_fold, audio)
  gap = write(tmp_path / 'c.csv', ESC50_CSV + '3-1-A-0.wav,3,5,cow,False,1,A\n')
  with pytest.raises(ValueError, match=r'c.csv: targets must be 0..2, missing \[2, 3, 4\]'):
    annotations.esc50(gap, audio)


# registry


def test_parse_dispatches_and_names_unknown_datasets(tmp_path):
  touch(tmp_path, 'x.mp4')
  assert ids(annotations.parse('folder', root=str(tmp_path))) == ['x']
  assert set(annotations.PARSERS) == {'folder', 'vggsound', 'kinetics400', 'kinetics_sound', 'ave', 'ucf101',
                                      'hmdb51', 'esc50'}
  with pytest.raises(ValueError, match="unknown dataset 'kinetics'; known datasets: ave, esc50, folder, "):
    annotations.parse('kinetics', root=str(tmp_path))


def test_paths_are_absolute_even_from_a_relative_directory(tmp_path, monkeypatch):
  touch(tmp_path, 'clips/a.mp4')
  monkeypatch.chdir(tmp_path)
  entry, = annotations.folder('clips').entries
  assert os.path.isabs(entry.path) and entry.path == str(tmp_path / 'clips/a.mp4')
