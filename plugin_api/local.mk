# libduet: the serving core a host runtime links.
lib_LTLIBRARIES += libduet.la
libduet_la_SOURCES = \
	plugin_api/plugin_api-int.h \
	plugin_api/cpulist.h \
	plugin_api/cpulist.c \
	plugin_api/host.c \
	plugin_api/loader.c \
	plugin_api/schema.c \
	plugin_api/settings.c \
	plugin_api/settings_parse.c \
	plugin_api/settings_print.c \
	plugin_api/status.c \
	plugin_api/util.c
libduet_la_CPPFLAGS = $(AM_CPPFLAGS) -DDUET_PKGLIBDIR='"$(pkglibdir)"' $(LIBCONFIG_CFLAGS)
libduet_la_LDFLAGS = -no-undefined -version-info $(DUET_LT_VERSION) \
	-Wl,--version-script=$(top_srcdir)/build-aux/libduet.map
libduet_la_LIBADD = $(LIBCONFIG_LIBS) $(PTHREAD_LIBS)
