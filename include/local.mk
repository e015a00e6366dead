# Public headers, installed in $(includedir)/duet.
duet_includedir = $(includedir)/duet
duet_include_HEADERS = \
	include/duet/types.h \
	include/duet/plugin.h \
	include/duet/config.h \
	include/duet/loader.h
